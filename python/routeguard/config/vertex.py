"""A ``vertex_ai`` deployment's settings checked at load: the google-auth extra installed,
project and location (from the deployment, LiteLLM's environment variables, or the
service account), and the credentials (a JSON file, its text, or Application Default
Credentials), read now so a typo is a config error, not a failed request. The result is
the deployment's :class:`~routeguard.deployment.VertexTarget`, its provider kind (Claude
models go to ``vertex_ai_anthropic``) and its endpoint."""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from routeguard.config.settings import ENV_PREFIX, VERTEX_DEFAULT_LOCATION, RawVertexDeployment
from routeguard.deployment import Secret, VertexTarget
from routeguard.errors import ConfigProblem

INSTALL = "pip install 'routeguard[vertex]'"
# Key file types vertex_credentials takes; others (workload identity federation,
# impersonation) work as Application Default Credentials.
CREDENTIAL_TYPES = ("service_account", "authorized_user")
_LOCATION = re.compile(r"^[a-z]+(?:-[a-z0-9]+)*$")  # us-central1, europe-west4, global
# Project ids (my-proj-123) and the older domain-scoped ones (example.com:my-proj).
_PROJECT = re.compile(r"^(?:[a-z0-9.\-]+:)?[a-z][a-z0-9\-]{4,28}[a-z0-9]$")


def google_auth_installed() -> bool:
    """Whether google-auth (the ``vertex`` extra) can be imported."""
    try:
        return importlib.util.find_spec("google.auth") is not None
    except ModuleNotFoundError:  # no ``google`` namespace package at all
        return False


def endpoint(location: str) -> str:
    """Vertex AI's endpoint for ``location`` (``global`` has no region prefix)."""
    if location == "global":
        return "https://aiplatform.googleapis.com"
    return f"https://{location}-aiplatform.googleapis.com"


def vertex_target(
    rd: RawVertexDeployment, path: str, env: Mapping[str, str], problems: list[ConfigProblem]
) -> tuple[str, VertexTarget] | None:
    """(provider kind, VertexTarget) of a vertex_ai deployment; None after a problem."""
    start = len(problems)
    if not google_auth_installed():
        problems.append(
            ConfigProblem(
                path,
                f"vertex_ai deployments authenticate through google-auth, which is not "
                f"installed: {INSTALL}",
            )
        )
    if rd.api_key is not None:
        problems.append(
            ConfigProblem(
                f"{path}.api_key",
                "vertex_ai authenticates with Google credentials: set vertex_credentials "
                "(a service-account JSON file or its text) or leave it out for Application "
                "Default Credentials",
            )
        )
    location = _value(rd.vertex_location, f"{path}.vertex_location", env, problems)
    location = location or env.get("VERTEXAI_LOCATION") or VERTEX_DEFAULT_LOCATION
    if not _LOCATION.match(location):
        problems.append(
            ConfigProblem(
                f"{path}.vertex_location",
                f"expected a Google Cloud region such as us-central1 or 'global', got {location!r}",
            )
        )
    project = _value(rd.vertex_project, f"{path}.vertex_project", env, problems)
    project = project or env.get("VERTEXAI_PROJECT") or env.get("GOOGLE_CLOUD_PROJECT")
    file = info = None
    given = rd.vertex_credentials
    if isinstance(given, dict):  # written as a YAML mapping rather than JSON text
        given = json.dumps(given)
    raw = _value(given, f"{path}.vertex_credentials", env, problems)
    if raw is not None:
        where = f"{path}.vertex_credentials"
        if raw.lstrip().startswith("{"):
            creds = _parse(raw, where, "its JSON text", problems)
            if creds is not None:
                info = Secret(raw)
                if isinstance(creds.get("private_key"), str):
                    Secret(creds["private_key"])  # registered for scrubbing
        else:
            try:
                text = Path(raw).expanduser().read_text(encoding="utf-8")
            except OSError as exc:
                problems.append(
                    ConfigProblem(where, f"cannot read the credentials file {raw}: {exc.strerror}")
                )
                creds = None
            else:
                creds = _parse(text, where, f"the file {raw}", problems)
            file = str(Path(raw).expanduser())
        if creds is not None and not project and isinstance(creds.get("project_id"), str):
            project = creds["project_id"]
    if project is not None and not _PROJECT.match(project):
        problems.append(
            ConfigProblem(f"{path}.vertex_project", f"not a Google Cloud project id: {project!r}")
        )
    if len(problems) > start:
        return None
    kind = "vertex_ai_anthropic" if rd.model.startswith("claude") else "vertex_ai"
    return kind, VertexTarget(project, location, file, info)


def _value(
    value: str | None, where: str, env: Mapping[str, str], problems: list[ConfigProblem]
) -> str | None:
    """``value``, or the environment variable it names as ``os.environ/VAR``."""
    if value is None or not value.startswith(ENV_PREFIX):
        return value or None
    var = value[len(ENV_PREFIX) :]
    if not env.get(var):
        problems.append(ConfigProblem(where, f"environment variable {var} is not set"))
        return None
    return env[var]


def _parse(
    text: str, where: str, what: str, problems: list[ConfigProblem]
) -> dict[str, Any] | None:
    """Google credentials JSON (with its ``type``), or a problem saying why not."""
    try:
        creds = json.loads(text)
    except ValueError:
        problems.append(ConfigProblem(where, f"{what} is not JSON"))
        return None
    if not isinstance(creds, dict) or not isinstance(creds.get("type"), str):
        problems.append(
            ConfigProblem(
                where,
                f"{what} is not Google credentials (expected a JSON object with a 'type', "
                "such as a service-account key file)",
            )
        )
        return None
    if creds["type"] not in CREDENTIAL_TYPES:
        problems.append(
            ConfigProblem(
                where,
                f"{what} holds credentials of type {creds['type']!r}; vertex_credentials takes "
                f"{' or '.join(CREDENTIAL_TYPES)} keys. For other types point "
                "GOOGLE_APPLICATION_CREDENTIALS at the file and leave vertex_credentials out "
                "(Application Default Credentials)",
            )
        )
        return None
    return creds
