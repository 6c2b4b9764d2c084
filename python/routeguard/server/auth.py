"""Who is calling: the proxy's authentication, from the request headers to a Principal.

Order: the master key (admin: every model, the admin API) -> a virtual key from the
gateway's KeyStore (its scopes, narrowed by its team's or user's models, its limits and
identity chain) -> anyone, but only in the embedded default (no master key, no database, no
key store: announced once at start). Whether keys are
required follows from that configuration, fixed when the proxy starts, never from what the
store holds at the moment: a Redis emptied by a restart or FLUSHALL makes every key fail, not
every caller anonymous. (Keys added to the embedded in-memory store turn requirement on for
good.) A store that cannot be read answers 503. A key arrives as ``Authorization: Bearer
<key>`` (OpenAI SDKs) or ``x-api-key`` (Anthropic SDKs).
"""

from __future__ import annotations

import functools
import hmac
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

from routeguard.budget.directory import Directory
from routeguard.budget.keys import KeyRecord, KeyStore
from routeguard.config import ServerSettings
from routeguard.errors import AuthenticationError, PermissionDenied

__all__ = ["ADMIN", "ANONYMOUS", "PermissionDenied", "Principal", "authenticate", "bearer"]


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
        return _tenant(s.org, s.team, self.key.key_id)

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


CONNECTION_KEY = "routeguard.connection_authenticated"
# The ASGI scope extension our protocol sets: a callable saying whether the whole request
# body has arrived (the app then reads it without arming a deadline).
BODY_READY = "routeguard.body_ready"
"""ASGI scope key the server's protocol may set: a callable marking the connection as having
passed authentication (routeguard.server.connections caps the connections that have not)."""

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


def keys_required(server: ServerSettings) -> bool:
    """Whether the configuration asks for keys: a master key, a key database or a shared store."""
    return (
        server.master_key is not None or server.database is not None or server.key_store != "sqlite"
    )


@functools.lru_cache(maxsize=4096)
def _tenant(org: str | None, team: str | None, key_id: str) -> str:
    """:attr:`Principal.tenant` of a key (percent-encoding each part, once per key)."""
    if org or team:
        return f"team:{quote(org or '', safe='')}/{quote(team or '', safe='')}"
    return f"key:{quote(key_id, safe='')}"


class Gate:
    """The proxy's authentication: open or closed by configuration, decided at start."""

    def __init__(self, master: bytes | None, keys: KeyStore, *, required: bool) -> None:
        self.master = master
        self.keys = keys
        self.directory = Directory(keys)  # a team's (or user's) models narrow its keys
        self._required = required or master is not None or len(keys) > 0
        # The Principal of each key's scoped record, by key id, kept while that record is
        # the one in use (a changed key, or a change of its team's models, is a new
        # record, which replaces it): made once, not twice a request.
        self._principals: dict[str, tuple[KeyRecord, Principal]] = {}

    @property
    def required(self) -> bool:
        """Whether callers must present a key (once true, true for good)."""
        if not self._required and len(self.keys) > 0:
            self._required = True  # keys added at run time to the embedded store
        return self._required

    def authenticate(self, scope: MutableMapping[str, Any]) -> Principal:
        """The Principal for this request, or AuthenticationError / KeyStoreUnavailable."""
        found = _presented(scope, self.master, self.keys) if self.required else ANONYMOUS
        principal = found if isinstance(found, Principal) else self._principal(found)
        mark = scope.get(CONNECTION_KEY)
        if mark is not None:
            mark()
        return principal

    def _principal(self, key: KeyRecord) -> Principal:
        """The Principal of ``key`` (just authenticated), within its team's or user's models."""
        scoped = self.directory.scoped(key)
        seen = self._principals.get(scoped.key_id)
        if seen is not None and seen[0] is scoped:
            return seen[1]
        principal = Principal("key", scoped)
        if len(self._principals) > 100_000:
            self._principals.clear()
        self._principals[scoped.key_id] = (scoped, principal)
        return principal


def authenticate(
    scope: MutableMapping[str, Any], master: bytes | None, keys: KeyStore
) -> Principal:
    """The Principal for a request that must present a key, or AuthenticationError."""
    found = _presented(scope, master, keys)
    return found if isinstance(found, Principal) else Principal("key", found)


def _presented(
    scope: MutableMapping[str, Any], master: bytes | None, keys: KeyStore
) -> Principal | KeyRecord:
    """:data:`ADMIN` for the master key, else the usable record of the virtual key
    presented; AuthenticationError for none, or for one that is not usable."""
    token = bearer(scope)
    if token is None:
        raise AuthenticationError("missing API key: send 'Authorization: Bearer <key>'")
    if master is not None and hmac.compare_digest(token, master):
        return ADMIN
    try:
        text = token.decode()
    except UnicodeDecodeError:
        raise AuthenticationError("invalid API key") from None
    return keys.authenticate(text)
