"""LiteLLM's logging callbacks (``litellm_settings.callbacks``, ``success_callback``,
``failure_callback``) mapped onto our ``observability`` section.

``prometheus`` turns on ``/metrics``; ``otel`` turns on tracing with the OpenTelemetry
environment (LiteLLM's own OTEL_EXPORTER / OTEL_ENDPOINT / OTEL_HEADERS, else the standard
OTEL_EXPORTER_OTLP_* that the exporter reads); backends that accept OTLP get an OTLP
destination of their own: ``langfuse`` its ``/api/public/otel`` endpoint with Basic auth
from LANGFUSE_PUBLIC_KEY / LANGFUSE_SECRET_KEY, ``datadog`` the local Datadog Agent's OTLP
intake (port 4318, which the Agent must have turned on). Any other callback is named in
one warning. See docs/observability.md, "From LiteLLM".
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

CALLBACK_KEYS = ("callbacks", "success_callback", "failure_callback")
LANGFUSE_DEFAULT_HOST = "https://cloud.langfuse.com"
_OTEL = {"otel", "opentelemetry", "otel_v2"}
_LANGFUSE = {"langfuse", "langfuse_otel"}
_DATADOG = {"datadog", "datadog_llm_observability"}


def map_callbacks(
    settings: dict[str, Any], env: Mapping[str, str], warnings: list[str]
) -> dict[str, Any]:
    """Pop the callback keys from LiteLLM's ``settings``; the ``observability`` section
    they ask for ({} when none maps), each one that does not named in ``warnings``."""
    names: list[str] = []
    for key in CALLBACK_KEYS:
        value = settings.pop(key, None)
        for item in value if isinstance(value, list) else [] if value is None else [value]:
            name = str(item)
            if name in names:
                continue
            names.append(name)
            if not _known(name):
                warnings.append(
                    f"litellm_settings.{key}: callback '{name}' is not supported and is ignored "
                    "(routeguard exports traces to any OTLP backend: observability.tracing)"
                )
    out: dict[str, Any] = {}
    if "prometheus" in names:
        out["metrics"] = True
    targets: list[dict[str, Any]] = []
    if any(n in _OTEL for n in names):
        targets.append(_otel(env, warnings))
    if any(n in _LANGFUSE for n in names):
        target = _langfuse(env, warnings)
        if target is not None:
            targets.append(target)
    if any(n in _DATADOG for n in names):
        host = env.get("DD_AGENT_HOST") or "localhost"
        targets.append({"endpoint": f"http://{host}:4318", "protocol": "http"})
    if targets:
        out["tracing"] = {**targets[0], "exporters": targets[1:]} if targets[1:] else targets[0]
    return out


def _known(name: str) -> bool:
    return name == "prometheus" or name in _OTEL | _LANGFUSE | _DATADOG


def _otel(env: Mapping[str, str], warnings: list[str]) -> dict[str, Any]:
    """The ``otel`` callback's destination from LiteLLM's variables (empty: the exporter
    reads OTEL_EXPORTER_OTLP_* itself)."""
    target: dict[str, Any] = {}
    exporter = env.get("OTEL_EXPORTER", "").strip().lower()
    if exporter in ("otlp_grpc", "grpc"):
        target["protocol"] = "grpc"
    elif exporter in ("otlp_http", "http", "http/protobuf"):
        target["protocol"] = "http"
    elif exporter:
        warnings.append(
            f"OTEL_EXPORTER={exporter} is not supported (OTLP only: otlp_http or otlp_grpc); "
            "traces go to the OTEL_EXPORTER_OTLP_* destination"
        )
    if env.get("OTEL_ENDPOINT"):
        target["endpoint"] = env["OTEL_ENDPOINT"]
    headers = env.get("OTEL_HEADERS")
    if headers:
        target["headers"] = {
            k.strip(): unquote(v.strip())
            for k, _, v in (pair.partition("=") for pair in headers.split(","))
            if k.strip()
        }
    return target


def _langfuse(env: Mapping[str, str], warnings: list[str]) -> dict[str, Any] | None:
    """Langfuse's OTLP/HTTP endpoint with Basic auth (public key : secret key)."""
    public, secret = env.get("LANGFUSE_PUBLIC_KEY"), env.get("LANGFUSE_SECRET_KEY")
    if not public or not secret:
        warnings.append(
            "callback 'langfuse': LANGFUSE_PUBLIC_KEY and LANGFUSE_SECRET_KEY must both be set; "
            "no traces are sent to Langfuse"
        )
        return None
    host = env.get("LANGFUSE_OTEL_HOST") or env.get("LANGFUSE_HOST") or LANGFUSE_DEFAULT_HOST
    token = base64.b64encode(f"{public}:{secret}".encode()).decode()
    return {
        "endpoint": host.rstrip("/") + "/api/public/otel",
        "protocol": "http",
        "headers": {"authorization": f"Basic {token}", "x-langfuse-ingestion-version": "4"},
    }
