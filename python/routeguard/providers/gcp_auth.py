"""Google OAuth access tokens for Vertex AI deployments, through google-auth.

One :class:`TokenSource` per set of credentials (a service-account file, its JSON text, or
Application Default Credentials), shared by every deployment using them: :func:`source_for`.
``await source.token()`` returns a cached bearer token; google-auth's refresh is blocking
(it signs a JWT and POSTs to the token endpoint), so it runs in a worker thread, and one
refresh at a time serves every request waiting for it. A token nearing expiry is refreshed
in the background while it still serves; only an expired (or missing) token makes requests
wait. Tokens are registered with :mod:`routeguard.scrub` and never logged.

google-auth is the optional ``routeguard[vertex]`` extra: this module imports it lazily.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib
import json
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from routeguard import scrub
from routeguard.deployment import VertexTarget
from routeguard.errors import (
    ProviderError,
    UpstreamAuthError,
    UpstreamConnectionError,
    UpstreamTimeout,
)

log = logging.getLogger(__name__)

SCOPE = "https://www.googleapis.com/auth/cloud-platform"
# A token with less than this left is refreshed in the background while it still serves.
REFRESH_AHEAD = 300.0
# A token with less than this left is not sent: requests wait for a fresh one.
EXPIRY_SKEW = 30.0
# google-auth reports no expiry for some credentials: assume Google's usual hour, less margin.
UNKNOWN_LIFETIME = 3000.0
TOKEN_TIMEOUT = 30.0  # one token request (google-auth's own default is 120 s)

_executor = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="rg-gauth")


@dataclass(frozen=True, slots=True)
class _Token:
    value: str
    expires_at: float  # time.time() seconds


class TokenSource:
    """Bearer tokens for one set of Google credentials (see the module docstring)."""

    def __init__(self, file: str | None = None, info: str | None = None) -> None:
        self._file = file
        self._info = info  # the service-account (or other credentials) JSON text
        self._lock = threading.Lock()
        self._credentials: Any = None
        self._transport: Any = None
        self._project: str | None = None
        self._token: _Token | None = None
        self._previous: str | None = None  # the token before this one, still masked
        self.quota_project: str | None = None  # sent as x-goog-user-project when set
        self._inflight: concurrent.futures.Future[_Token] | None = None
        self.fetches = 0  # tokens obtained so far (for tests and metrics)

    @property
    def describe(self) -> str:
        """Where the credentials come from, for messages (never their content)."""
        if self._file is not None:
            return f"vertex_credentials file {self._file}"
        if self._info is not None:
            return "vertex_credentials JSON"
        return "Application Default Credentials"

    async def token(self, timeout: float | None = None) -> str:
        """A bearer token valid for at least EXPIRY_SKEW seconds more; waiting for a new one
        gives up after ``timeout`` seconds (the refresh goes on for the next caller)."""
        current = self._token
        now = time.time()
        if current is not None and current.expires_at - now > EXPIRY_SKEW:
            if current.expires_at - now <= REFRESH_AHEAD:
                self._refresh()  # ahead of expiry, in the background; this one still serves
            return current.value
        try:
            async with asyncio.timeout(timeout):
                fresh = await asyncio.shield(asyncio.wrap_future(self._refresh()))
        except TimeoutError:
            raise UpstreamTimeout(
                f"vertex_ai: no Google access token within {timeout:g}s",
                detail=f"vertex_ai: the token endpoint for {self.describe} is slow",
            ) from None
        return fresh.value

    async def project(self) -> str | None:
        """The project the credentials name (a service account's ``project_id``, ADC's)."""
        if self._credentials is None:
            await asyncio.shield(asyncio.wrap_future(_executor.submit(self._load)))
        return self._project

    def invalidate(self, token: str) -> None:
        """Forget ``token`` (the upstream refused it): the next request gets a new one."""
        with self._lock:
            if self._token is not None and self._token.value == token:
                self._token = None

    def _refresh(self) -> concurrent.futures.Future[_Token]:
        """The refresh in flight, or a new one (one at a time, whoever asks)."""
        with self._lock:
            current = self._token
            if current is not None and current.expires_at - time.time() > REFRESH_AHEAD:
                done: concurrent.futures.Future[_Token] = concurrent.futures.Future()
                done.set_result(current)  # refreshed while this caller looked
                return done
            if self._inflight is None:
                # _fetch clears _inflight under this lock, so never before it is set here.
                self._inflight = _executor.submit(self._fetch)
            return self._inflight

    def _fetch(self) -> _Token:
        """Refresh the credentials (blocking, in a worker thread) and keep the token."""
        try:
            creds = self._load()
            creds.refresh(self._transport)
            value = creds.token
            if not isinstance(value, str) or not value:
                raise UpstreamAuthError(
                    "vertex_ai: Google's token endpoint returned no access token",
                    detail=f"vertex_ai: no access token for {self.describe}",
                )
            scrub.remember(value)
            expiry = creds.expiry  # a naive UTC datetime, or None
            expires_at = (
                expiry.replace(tzinfo=_utc()).timestamp()
                if expiry is not None
                else time.time() + UNKNOWN_LIFETIME
            )
            token = _Token(value, expires_at)
            with self._lock:
                if self._token is not None and self._token.value != value:
                    # Masking keeps the current and the previous token (requests may still
                    # carry it); older ones expired long ago.
                    if self._previous is not None:
                        scrub.forget(self._previous)
                    self._previous = self._token.value
                self._token = token
                self.fetches += 1
            return token
        except Exception as exc:
            err = exc if isinstance(exc, ProviderError) else _auth_error(exc, self.describe)
            # Said once here: a background refresh has no caller to tell.
            log.warning("vertex_ai: token refresh failed: %s", err.detail)
            raise err from None
        finally:
            with self._lock:
                self._inflight = None

    def _load(self) -> Any:
        """The google-auth credentials object (loaded once; blocking)."""
        if self._credentials is not None:
            return self._credentials
        # Imported as Any: google-auth is an optional extra and mostly untyped.
        gauth: Any = importlib.import_module("google.auth")
        transport: Any = importlib.import_module("google.auth.transport.requests")

        class _Request(transport.Request):  # type: ignore[misc]
            def __call__(self, *args: Any, **kwargs: Any) -> Any:
                kwargs.setdefault("timeout", TOKEN_TIMEOUT)
                return super().__call__(*args, **kwargs)

        try:
            if self._info is None and self._file is None:
                creds, project = gauth.default(scopes=[SCOPE])
            else:
                text = self._info
                if text is None:
                    assert self._file is not None
                    text = Path(self._file).read_text(encoding="utf-8")
                info = json.loads(text)
                creds = _from_info(info)
                project = info.get("project_id") or info.get("quota_project_id")
        except Exception as exc:
            raise _auth_error(exc, self.describe) from None
        with self._lock:
            if self._credentials is None:
                self._transport = _Request()
                self._project = project if isinstance(project, str) and project else None
                quota = getattr(creds, "quota_project_id", None)
                self.quota_project = quota if isinstance(quota, str) and quota else None
                self._credentials = creds
            return self._credentials


def _from_info(info: Any) -> Any:
    """google-auth credentials for a key file's JSON, loaded by its own type's loader (the
    generic loaders accept any type, which Google advises against for key files)."""
    kind = info.get("type") if isinstance(info, dict) else None
    if kind == "service_account":
        sa: Any = importlib.import_module("google.oauth2.service_account")
        return sa.Credentials.from_service_account_info(info, scopes=[SCOPE])
    if kind == "authorized_user":
        user: Any = importlib.import_module("google.oauth2.credentials")
        return user.Credentials.from_authorized_user_info(info, scopes=[SCOPE])
    raise ValueError(f"credentials of type {kind!r} are not supported in vertex_credentials")


def _utc() -> Any:
    import datetime

    return datetime.UTC


def _auth_error(exc: BaseException, where: str) -> ProviderError:
    """A google-auth failure as the ProviderError a gateway acts on."""
    gexc: Any = importlib.import_module("google.auth.exceptions")

    detail = scrub.scrub(f"vertex_ai: {where}: {type(exc).__name__}: {exc}")
    if isinstance(exc, gexc.TransportError) or getattr(exc, "retryable", False):
        # The token endpoint could not be reached or asked us to come back: transient.
        return UpstreamConnectionError(
            "vertex_ai: cannot get a Google access token now (token endpoint unavailable)",
            detail=detail,
        )
    if isinstance(exc, gexc.DefaultCredentialsError):
        return UpstreamAuthError(
            "vertex_ai: no usable Google credentials: set vertex_credentials on the deployment, "
            "GOOGLE_APPLICATION_CREDENTIALS, or run `gcloud auth application-default login`",
            detail=detail,
        )
    return UpstreamAuthError(
        "vertex_ai: Google refused the deployment's credentials (no access token)",
        detail=detail,
    )


_sources: dict[tuple[str | None, str | None], TokenSource] = {}
_sources_lock = threading.Lock()


def source_for(target: VertexTarget) -> TokenSource:
    """The shared TokenSource of a deployment's credentials."""
    info = target.credentials_json.get() if target.credentials_json is not None else None
    key = (target.credentials_file, info)
    with _sources_lock:
        source = _sources.get(key)
        if source is None:
            source = _sources[key] = TokenSource(target.credentials_file, info)
        return source
