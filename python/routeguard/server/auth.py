"""Who is calling: the proxy's authentication, from the request headers to a Principal.

Order: the master key (admin: every model, the admin API) -> a virtual key from the
gateway's KeyStore (its scopes, limits and identity chain) -> with neither a master key nor
any virtual key configured, anyone (the embedded default, announced once at start). A key
arrives as ``Authorization: Bearer <key>`` (OpenAI SDKs) or ``x-api-key`` (Anthropic SDKs).
"""

from __future__ import annotations

import hmac
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

from routeguard.budget.keys import KeyRecord, KeyStore
from routeguard.errors import AuthenticationError, RouteguardError


class PermissionDenied(RouteguardError):
    """The caller is known but may not do this."""

    status_code = 403
    error_type = "permission_error"
    code = "permission_denied"


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller."""

    kind: Literal["anonymous", "admin", "key"]
    key: KeyRecord | None = None

    @property
    def tenant(self) -> str:
        """The cache/isolation tenant: the key's org/team, else the key itself, each part
        percent-encoded so that no two (org, team) pairs or keys share a tenant."""
        if self.key is None:
            return "default"
        s = self.key.spec
        if s.org or s.team:
            return f"team:{quote(s.org or '', safe='')}/{quote(s.team or '', safe='')}"
        return f"key:{quote(self.key.key_id, safe='')}"

    @property
    def accounts(self) -> tuple[str | None, ...]:
        """The budget accounts this caller's requests are charged to (leaf first)."""
        if self.key is None:
            return ()
        s = self.key.spec
        return (s.user, s.team, s.org)

    def check_model(self, alias: str) -> None:
        """Raise PermissionDenied when the caller's key may not use ``alias``."""
        if self.key is not None and not self.key.allows(alias):
            raise PermissionDenied(f"API key {self.key.key_id} may not use model '{alias}'")

    def require_admin(self) -> None:
        """Raise unless the caller used the master key."""
        if self.kind != "admin":
            raise PermissionDenied("this endpoint needs the master key")


ANONYMOUS = Principal("anonymous")
ADMIN = Principal("admin")


def bearer(scope: MutableMapping[str, Any]) -> bytes | None:
    """The presented key, from ``Authorization: Bearer`` or ``x-api-key``."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, rest = value.partition(b" ")
            if scheme.lower() == b"bearer" and rest.strip():
                return bytes(rest.strip())
        elif name == b"x-api-key" and value.strip():
            return bytes(value.strip())
    return None


def authenticate(
    scope: MutableMapping[str, Any], master: bytes | None, keys: KeyStore
) -> Principal:
    """The Principal for this request, or AuthenticationError."""
    token = bearer(scope)
    if master is None and len(keys) == 0:
        return ANONYMOUS
    if token is None:
        raise AuthenticationError("missing API key: send 'Authorization: Bearer <key>'")
    if master is not None and hmac.compare_digest(token, master):
        return ADMIN
    try:
        text = token.decode()
    except UnicodeDecodeError:
        raise AuthenticationError("invalid API key") from None
    return Principal("key", keys.authenticate(text))
