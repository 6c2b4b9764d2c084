"""``observability.tracing`` checked into a :class:`TracingConfig`: each OTLP destination's
full traces URL, protocol and headers (``os.environ/VAR`` values resolved into secrets),
the standard OTEL_EXPORTER_OTLP_* variables filling in what the config leaves out, and the
optional ``routeguard[otel]`` extra required at load, with the pip command when missing."""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from typing import Literal
from urllib.parse import urlsplit

from routeguard.config.settings import (
    ENV_PREFIX,
    OtlpExporterSettings,
    OtlpTarget,
    TracingConfig,
    TracingSettings,
)
from routeguard.deployment import Secret
from routeguard.errors import ConfigProblem

TRACES_PATH = "/v1/traces"
# The modules each protocol needs (the SDK and the HTTP exporter always: the proxy's tracing
# builds on both), and the extra that installs them.
_BASE = ("opentelemetry.sdk.trace", "opentelemetry.exporter.otlp.proto.http.trace_exporter")
_NEEDS = {
    "http": (_BASE, "otel"),
    "grpc": ((*_BASE, "opentelemetry.exporter.otlp.proto.grpc.trace_exporter"), "otel-grpc"),
}


def check_tracing(
    given: TracingSettings | bool | None, env: Mapping[str, str], problems: list[ConfigProblem]
) -> TracingConfig | None:
    """The validated tracing settings (None: tracing off); problems are added, never raised."""
    if given is None or given is False:
        return None
    settings = TracingSettings() if given is True else given
    path = "observability.tracing"
    targets: list[OtlpTarget] = []
    for i, raw in enumerate([settings, *settings.exporters]):
        where = path if i == 0 else f"{path}.exporters[{i - 1}]"
        target = _target(raw, where, env, problems, first=i == 0)
        if target is not None:
            targets.append(target)
    ratio = settings.sample_ratio
    if ratio is not None and not 0.0 <= ratio <= 1.0:
        problems.append(ConfigProblem(f"{path}.sample_ratio", f"must be in [0, 1], got {ratio}"))
    for protocol in sorted({t.protocol for t in targets}):
        modules, extra = _NEEDS[protocol]
        if not all(_importable(m) for m in modules):
            problems.append(
                ConfigProblem(
                    path,
                    f"OTLP/{protocol} tracing needs the optional OpenTelemetry packages: "
                    f"pip install 'routeguard[{extra}]'",
                )
            )
    return TracingConfig(tuple(targets), ratio, settings.service_name, settings.stages)


def _target(
    raw: OtlpExporterSettings,
    where: str,
    env: Mapping[str, str],
    problems: list[ConfigProblem],
    *,
    first: bool,
) -> OtlpTarget | None:
    protocol = _protocol(raw.protocol, where, env, problems)
    endpoint = raw.endpoint
    if endpoint is not None and endpoint.startswith(ENV_PREFIX):
        var = endpoint[len(ENV_PREFIX) :]
        endpoint = env.get(var)
        if not endpoint:
            problems.append(ConfigProblem(f"{where}.endpoint", f"{var} is not set"))
            return None
    if endpoint is None:
        if not first:
            problems.append(
                ConfigProblem(f"{where}.endpoint", "required (only the first destination may "
                              "take OTEL_EXPORTER_OTLP_ENDPOINT from the environment)")
            )  # fmt: skip
            return None
    else:
        endpoint = _endpoint(endpoint, protocol, f"{where}.endpoint", problems)
        if endpoint is None:
            return None
    headers: list[tuple[str, Secret]] = []
    for name, value in raw.headers.items():
        if value.startswith(ENV_PREFIX):
            var = value[len(ENV_PREFIX) :]
            if var not in env:
                problems.append(ConfigProblem(f"{where}.headers.{name}", f"{var} is not set"))
                continue
            value = env[var]
        headers.append((name.lower(), Secret(value)))
    return OtlpTarget(endpoint, protocol, tuple(headers) if raw.headers else None)


def _protocol(
    given: Literal["http", "grpc"] | None,
    where: str,
    env: Mapping[str, str],
    problems: list[ConfigProblem],
) -> Literal["http", "grpc"]:
    """The configured protocol, else the environment's (``http/protobuf`` or ``grpc``)."""
    if given is not None:
        return given
    for var in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        value = env.get(var, "").strip().lower()
        if not value:
            continue
        if value == "grpc":
            return "grpc"
        if value != "http/protobuf":
            problems.append(
                ConfigProblem(
                    f"{where}.protocol",
                    f"{var}={value} is not available: OTLP over http/protobuf or grpc; set "
                    "protocol: http or grpc",
                )
            )
        return "http"
    return "http"


def _endpoint(url: str, protocol: str, where: str, problems: list[ConfigProblem]) -> str | None:
    """The URL an exporter sends to: for http a base URL gets ``/v1/traces`` (as
    OTEL_EXPORTER_OTLP_ENDPOINT does); grpc takes ``http://host:4317`` (plain) or
    ``https://host:4317`` (TLS) as given."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        problems.append(ConfigProblem(where, f"expected an http:// or https:// URL, got {url!r}"))
        return None
    if protocol == "grpc":
        return url
    base = url.rstrip("/")
    return base if base.endswith(TRACES_PATH) else base + TRACES_PATH


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False
