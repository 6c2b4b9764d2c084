"""The cloud-hosted providers' own settings, checked at load: Azure OpenAI (endpoint, API
version, key or Entra ID token) and AWS Bedrock (region, credentials or a Bedrock API key).

:func:`cloud_settings` reads a raw ``type: azure`` / ``type: bedrock`` entry, fills in what
the environment gives (the variables LiteLLM and the AWS SDKs read), and returns what
``load`` puts on the :class:`~routeguard.deployment.Deployment`. An optional SDK the entry
needs but that is not installed is a problem naming the ``pip install`` to run.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from routeguard.config.settings import ENV_PREFIX, RawAzureDeployment, RawBedrockDeployment
from routeguard.deployment import AwsSettings, AzureSettings, Secret
from routeguard.errors import ConfigProblem

# The latest GA data-plane version of the dated Azure OpenAI API (the default); "v1" or
# "preview" select the versionless /openai/v1/ API instead.
AZURE_DEFAULT_API_VERSION = "2024-10-21"
AZURE_V1_VERSIONS = frozenset({"v1", "latest", "preview"})
AZURE_KEY_VARS = ("AZURE_API_KEY", "AZURE_OPENAI_API_KEY")
AZURE_BASE_VARS = ("AZURE_API_BASE", "AZURE_OPENAI_ENDPOINT")
AWS_REGION_VARS = ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_REGION_NAME")
BEDROCK_API_KEY_VAR = "AWS_BEARER_TOKEN_BEDROCK"
PIP_BEDROCK = "pip install 'routeguard[bedrock]'"
PIP_AZURE = "pip install 'routeguard[azure]'"

Resolve = Callable[[str, str], Secret | None]


def installed(module: str) -> bool:
    """Whether ``module`` can be imported (without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


@dataclass(frozen=True, slots=True)
class _Entry:
    """One cloud entry being read: where it is, the environment, the problems found so far,
    and how a secret setting is resolved."""

    path: str
    env: Mapping[str, str]
    problems: list[ConfigProblem]
    resolve: Resolve

    def problem(self, key: str | None, message: str) -> None:
        """Record a problem at ``key`` of the entry (the entry itself when None)."""
        self.problems.append(ConfigProblem(f"{self.path}.{key}" if key else self.path, message))

    def plain(self, value: str | None, key: str) -> str | None:
        """A non-secret setting, read from the environment when written ``os.environ/VAR``."""
        if value is None or not value.startswith(ENV_PREFIX):
            return value
        var = value[len(ENV_PREFIX) :]
        if var not in self.env:
            self.problem(key, f"environment variable {var} is not set")
            return None
        return self.env[var]

    def secret(self, value: str | None, key: str) -> Secret | None:
        """A secret setting, resolved (None when not given)."""
        return self.resolve(value, f"{self.path}.{key}") if value else None

    def first(self, names: tuple[str, ...]) -> str | None:
        """The first of the environment variables ``names`` that is set and not empty."""
        return next((self.env[n] for n in names if self.env.get(n)), None)


def cloud_settings(
    rd: Any,
    path: str,
    env: Mapping[str, str],
    problems: list[ConfigProblem],
    resolve: Resolve,
) -> dict[str, Any]:
    """Deployment fields a cloud entry adds: ``azure`` / ``aws`` settings, and ``api_base``
    or ``api_key`` when the config left them to the environment (empty for other types)."""
    entry = _Entry(path, env, problems, resolve)
    if isinstance(rd, RawAzureDeployment):
        return _azure(rd, entry)
    if isinstance(rd, RawBedrockDeployment):
        return _bedrock(rd, entry)
    return {}


def _azure(rd: RawAzureDeployment, entry: _Entry) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if rd.api_base is None:
        base = entry.first(AZURE_BASE_VARS)
        if base is None:
            entry.problem(
                "api_base",
                "required for azure: your resource's endpoint, "
                "https://<resource>.openai.azure.com (or set AZURE_API_BASE)",
            )
        else:
            out["api_base"] = base
    version = entry.plain(rd.api_version, "api_version")
    version = version or entry.env.get("AZURE_API_VERSION") or AZURE_DEFAULT_API_VERSION
    token = entry.secret(rd.azure_ad_token, "azure_ad_token")
    if rd.azure_ad_token_provider and not installed("azure.identity"):
        entry.problem(
            "azure_ad_token_provider",
            f"Entra ID tokens need the azure-identity package: {PIP_AZURE}",
        )
    if rd.api_key is None and token is None and not rd.azure_ad_token_provider:
        key = entry.first(AZURE_KEY_VARS)
        if key is not None:
            out["api_key"] = Secret(key)
    out["azure"] = AzureSettings(
        api_version=version, ad_token=token, token_provider=rd.azure_ad_token_provider
    )
    return out


def _bedrock(rd: RawBedrockDeployment, entry: _Entry) -> dict[str, Any]:
    out: dict[str, Any] = {}
    env = entry.env
    profile = entry.plain(rd.aws_profile_name, "aws_profile_name")
    region = entry.plain(rd.aws_region_name, "aws_region_name") or entry.first(AWS_REGION_VARS)
    key_id = entry.secret(rd.aws_access_key_id, "aws_access_key_id")
    secret = entry.secret(rd.aws_secret_access_key, "aws_secret_access_key")
    session = entry.secret(rd.aws_session_token, "aws_session_token")
    if (rd.aws_access_key_id is None) != (rd.aws_secret_access_key is None):
        entry.problem(
            None, "aws_access_key_id and aws_secret_access_key go together: set both or neither"
        )
    bearer = rd.api_key is not None or bool(env.get(BEDROCK_API_KEY_VAR))
    if rd.api_key is None and env.get(BEDROCK_API_KEY_VAR) and rd.aws_access_key_id is None:
        out["api_key"] = Secret(env[BEDROCK_API_KEY_VAR])
    elif rd.api_key is None:
        bearer = False
    if not bearer and not installed("botocore"):
        entry.problem(
            None,
            "bedrock with AWS credentials (SigV4 signing) needs botocore: "
            f"{PIP_BEDROCK} (or give a Bedrock API key as api_key / {BEDROCK_API_KEY_VAR})",
        )
    elif region is None and not bearer:
        region = _profile_region(profile)
    if region is None:
        entry.problem(
            "aws_region_name",
            "no AWS region: set aws_region_name or AWS_REGION (or a region in the profile)",
        )
        return out
    if rd.api_base is None:
        out["api_base"] = f"https://bedrock-runtime.{region}.amazonaws.com"
    out["aws"] = AwsSettings(
        region=region,
        access_key_id=key_id,
        secret_access_key=secret,
        session_token=session,
        profile=profile,
    )
    return out


def _profile_region(profile: str | None) -> str | None:
    """The region of the AWS config profile (``~/.aws/config``), through botocore."""
    import botocore.session

    try:
        region = botocore.session.Session(profile=profile).get_config_variable("region")
    except Exception:  # an unknown profile: reported when credentials are first needed
        return None
    return region if isinstance(region, str) and region else None
