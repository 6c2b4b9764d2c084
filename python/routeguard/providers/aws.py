"""AWS credentials and SigV4 request signing for Bedrock, through botocore (the optional
``bedrock`` extra).

Credentials come from the deployment (``aws_access_key_id`` / ``aws_secret_access_key`` /
``aws_session_token``) or else from botocore's standard chain for its profile: environment
variables, the shared config and credentials files, web identity (EKS, IRSA), container and
instance metadata. The chain is resolved once per deployment settings, off the event loop
(it may call the metadata service), and botocore refreshes temporary credentials itself;
a refresh that is due also runs in a thread. Signing covers the exact body bytes sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from routeguard.deployment import AwsSettings
from routeguard.errors import UpstreamAuthError

SERVICE = "bedrock"
_credentials: dict[AwsSettings, Any] = {}


def _resolve(settings: AwsSettings) -> Any:
    """botocore credentials for ``settings`` (blocking: runs in a thread)."""
    import botocore.credentials
    import botocore.session

    if settings.access_key_id is not None and settings.secret_access_key is not None:
        token = settings.session_token.get() if settings.session_token is not None else None
        return botocore.credentials.Credentials(
            settings.access_key_id.get(), settings.secret_access_key.get(), token
        )
    try:
        creds = botocore.session.Session(profile=settings.profile).get_credentials()
    except Exception as exc:  # an unknown profile, an unreadable config file
        raise UpstreamAuthError(
            f"bedrock: cannot load AWS credentials ({type(exc).__name__})",
            detail=f"bedrock: cannot load AWS credentials: {exc}",
        ) from None
    if creds is None:
        raise UpstreamAuthError(
            "bedrock: no AWS credentials found: set aws_access_key_id and "
            "aws_secret_access_key, AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, a profile "
            "(aws_profile_name, AWS_PROFILE), or run with an instance or task role"
        )
    return creds


async def _frozen(settings: AwsSettings) -> Any:
    creds: Any = _credentials.get(settings)
    if creds is None:
        creds = await asyncio.to_thread(_resolve, settings)
        _credentials[settings] = creds
    refresh_needed = getattr(creds, "refresh_needed", None)
    if callable(refresh_needed) and refresh_needed():
        return await asyncio.to_thread(creds.get_frozen_credentials)
    return creds.get_frozen_credentials()


async def sign(
    settings: AwsSettings, url: str, headers: Mapping[str, str], body: bytes
) -> dict[str, str]:
    """``headers`` plus the SigV4 ones (``authorization``, ``x-amz-date``, and
    ``x-amz-security-token`` for temporary credentials) for a POST of ``body`` to ``url``."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    frozen = await _frozen(settings)
    request = AWSRequest(method="POST", url=url, data=body, headers=dict(headers))
    SigV4Auth(frozen, SERVICE, settings.region).add_auth(request)
    return {str(k): str(v) for k, v in request.headers.items()}


def forget() -> None:
    """Drop cached credentials (tests; a process that changed its AWS environment)."""
    _credentials.clear()
