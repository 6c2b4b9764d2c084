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
from typing import Any

from routeguard.config.settings import ENV_PREFIX, RawAzureDeployment, RawBedrockDeployment
from routeguard.deployment import AwsSettings, AzureSettings, Secret, VertexTarget
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


def cloud_settings(
    rd: Any,
    path: str,
    env: Mapping[str, str],
    problems: list[ConfigProblem],
    resolve: Resolve,
) -> dict[str, Any]:
    """Deployment fields a cloud entry adds: ``azure`` / ``aws`` settings, and ``api_base``
    or ``api_key`` when the config left them to the environment (empty for other types)."""
    if isinstance(rd, RawAzureDeployment):
        return _azure(rd, path, env, problems, resolve)
    if isinstance(rd, RawBedrockDeployment):
        return _bedrock(rd, path, env, problems, resolve)
    return {}


def _plain(
    value: str | None, path: str, env: Mapping[str, str], problems: list[ConfigProblem]
) -> str | None:
    """A non-secret setting, read from the environment when written ``os.environ/VAR``."""
    if value is None or not value.startswith(ENV_PREFIX):
        return value
    var = value[len(ENV_PREFIX) :]
    if var not in env:
        problems.append(ConfigProblem(path, f"environment variable {var} is not set"))
        return None
    return env[var]


def _first(env: Mapping[str, str], names: tuple[str, ...]) -> str | None:
    return next((env[n] for n in names if env.get(n)), None)


def _azure(
    rd: RawAzureDeployment,
    path: str,
    env: Mapping[str, str],
    problems: list[ConfigProblem],
    resolve: Resolve,
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if rd.api_base is None:
        base = _first(env, AZURE_BASE_VARS)
        if base is None:
            problems.append(
                ConfigProblem(
                    f"{path}.api_base",
                    "required for azure: your resource's endpoint, "
                    "https://<resource>.openai.azure.com (or set AZURE_API_BASE)",
                )
            )
        else:
            out["api_base"] = base
    version = _plain(rd.api_version, f"{path}.api_version", env, problems)
    version = version or env.get("AZURE_API_VERSION") or AZURE_DEFAULT_API_VERSION
    token = resolve(rd.azure_ad_token, f"{path}.azure_ad_token") if rd.azure_ad_token else None
    if rd.azure_ad_token_provider and not installed("azure.identity"):
        problems.append(
            ConfigProblem(
                f"{path}.azure_ad_token_provider",
                f"Entra ID tokens need the azure-identity package: {PIP_AZURE}",
            )
        )
    if rd.api_key is None and token is None and not rd.azure_ad_token_provider:
        var = next((n for n in AZURE_KEY_VARS if env.get(n)), None)
        if var is not None:
            out["api_key"] = Secret(env[var])
    out["azure"] = AzureSettings(
        api_version=version, ad_token=token, token_provider=rd.azure_ad_token_provider
    )
    return out


def _bedrock(
    rd: RawBedrockDeployment,
    path: str,
    env: Mapping[str, str],
    problems: list[ConfigProblem],
    resolve: Resolve,
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    profile = _plain(rd.aws_profile_name, f"{path}.aws_profile_name", env, problems)
    region = _plain(rd.aws_region_name, f"{path}.aws_region_name", env, problems)
    region = region or _first(env, AWS_REGION_VARS)
    key_id = secret = session = None
    if rd.aws_access_key_id:
        key_id = resolve(rd.aws_access_key_id, f"{path}.aws_access_key_id")
    if rd.aws_secret_access_key:
        secret = resolve(rd.aws_secret_access_key, f"{path}.aws_secret_access_key")
    if rd.aws_session_token:
        session = resolve(rd.aws_session_token, f"{path}.aws_session_token")
    if (rd.aws_access_key_id is None) != (rd.aws_secret_access_key is None):
        problems.append(
            ConfigProblem(
                path, "aws_access_key_id and aws_secret_access_key go together: set both or neither"
            )
        )
    bearer = rd.api_key is not None or bool(env.get(BEDROCK_API_KEY_VAR))
    if rd.api_key is None and env.get(BEDROCK_API_KEY_VAR) and rd.aws_access_key_id is None:
        out["api_key"] = Secret(env[BEDROCK_API_KEY_VAR])
    elif rd.api_key is None:
        bearer = False
    if not bearer and not installed("botocore"):
        problems.append(
            ConfigProblem(
                path,
                "bedrock with AWS credentials (SigV4 signing) needs botocore: "
                f"{PIP_BEDROCK} (or give a Bedrock API key as api_key / {BEDROCK_API_KEY_VAR})",
            )
        )
    elif region is None and not bearer:
        region = _profile_region(profile)
    if region is None:
        problems.append(
            ConfigProblem(
                f"{path}.aws_region_name",
                "no AWS region: set aws_region_name or AWS_REGION (or a region in the profile)",
            )
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


# Region name prefixes of the clouds (AWS eu-west-1, Google europe-west4, us-central1) and
# the data region each stands for, as LiteLLM's region checks read them.
_REGION_PREFIXES = (("eu-", "eu"), ("europe-", "eu"), ("us-", "us"))


def data_region(written: str | None, vertex: VertexTarget | None, aws: Any) -> str | None:
    """Where a deployment processes data: its ``region_name`` ("eu", "us", or a cloud region
    such as ``eu-west-1``, folded to its data region), else its Bedrock or Vertex AI region's;
    None when unknown (such a deployment never serves a customer held to a region)."""
    name = written
    if name is None and isinstance(aws, AwsSettings):
        name = aws.region
    if name is None and vertex is not None:
        name = vertex.location
    if name is None:
        return None
    name = name.strip().lower()
    for prefix, region in _REGION_PREFIXES:
        if name.startswith(prefix):
            return region
    return name
