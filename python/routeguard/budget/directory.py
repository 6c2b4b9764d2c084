"""LiteLLM's teams, internal users, customers (end users) and organizations, as records.

The management API (:mod:`routeguard.server.litellm_entities`) writes them; the budget layer
reads them on each request to charge a key's team (and the team's organization), its user, and
the request's customer (the OpenAI ``user`` field). Each record is one JSON blob in the key
store, named ``<kind>/<id>``, so it lives where the keys live (in memory, the SQLite key
database, or Redis shared by every instance) and reloads the same way. Reads decode a blob
once and keep the object until the blob changes.

A record with ``max_budget``, ``rpm_limit`` or ``tpm_limit`` has a budget account named
``<kind>.<id>`` (:func:`account_name`); ``budget_duration`` (LiteLLM's ``30d``, ``1mo``...)
becomes its period, none meaning ``total`` (never resets), as in LiteLLM.
"""

from __future__ import annotations

import hashlib
import re
import threading
from typing import Any, Literal, TypeVar

import msgspec

from routeguard.budget.keys import KeyRecord, KeyStore
from routeguard.config.budgets import ACCOUNT_NAME, period_from_duration
from routeguard.errors import InvalidRequest

Kind = Literal["team", "user", "customer", "organization"]
_ID = re.compile(r"^[^\s{}:/]{1,190}$")
_ID_RULE = "use 1-190 characters without spaces, braces, colons or slashes"


class Member(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One team member (LiteLLM's ``Member``). Stored without its defaults, so a member
    without limits of its own reads the same in an older version; fields it does not know
    (a later version's) are ignored on reading (the API refuses unknown ones:
    :func:`unknown_fields`)."""

    user_id: str | None = None
    user_email: str | None = None
    role: Literal["admin", "user"] = "user"
    # The member's budget within the team (dollars, the team's period): its keys of the
    # team are charged to an account of their own under the team's (member_account).
    max_budget_in_team: float | None = None
    # The member's own period and rate limits within the team (LiteLLM's member
    # budget_duration, rpm_limit, tpm_limit); unset: the team's team_member_* defaults.
    budget_duration: str | None = None
    rpm_limit: int | None = None
    tpm_limit: int | None = None


OrgRole = Literal["org_admin", "internal_user", "internal_user_viewer"]


class OrgMember(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One member of an organization (LiteLLM's ``LiteLLM_OrganizationMembership``): an
    ``org_admin`` manages the organization's teams, their members and keys."""

    user_id: str | None = None
    user_email: str | None = None
    role: OrgRole = "internal_user"


class _Limits(msgspec.Struct, kw_only=True):
    max_budget: float | None = None
    budget_duration: str | None = None
    tpm_limit: int | None = None
    rpm_limit: int | None = None
    metadata: dict[str, Any] = {}
    created_at: float = 0.0
    updated_at: float = 0.0

    def limited(self) -> bool:
        """Whether the record has a budget or a rate limit (so a budget account)."""
        return (
            self.max_budget is not None
            or self.rpm_limit is not None
            or (self.tpm_limit is not None)
        )

    def period(self) -> str:
        """The budget account's period (``total`` without a ``budget_duration``)."""
        return (
            "total" if self.budget_duration is None else period_from_duration(self.budget_duration)
        )


class Team(_Limits, kw_only=True):
    """A team: its budget covers every key with its ``team_id``."""

    team_id: str
    team_alias: str | None = None
    organization_id: str | None = None
    models: list[str] = []
    members_with_roles: list[Member] = []
    blocked: bool = False
    # Defaults for every member's own account within the team (LiteLLM's team_member_*):
    # a member's max_budget_in_team, budget_duration, rpm_limit, tpm_limit override them.
    team_member_budget: float | None = None
    team_member_budget_duration: str | None = None
    team_member_rpm_limit: int | None = None
    team_member_tpm_limit: int | None = None


class User(_Limits, kw_only=True):
    """An internal user: its budget covers its keys that belong to no team (as in LiteLLM)."""

    user_id: str
    user_email: str | None = None
    user_role: Literal[
        "proxy_admin", "proxy_admin_viewer", "internal_user", "internal_user_viewer"
    ] = "internal_user"
    models: list[str] = []
    teams: list[str] = []


class Customer(_Limits, kw_only=True):
    """An end user of the caller's application, named by the request's ``user`` field."""

    user_id: str
    alias: str | None = None
    blocked: bool = False
    allowed_model_region: Literal["eu", "us"] | None = None
    default_model: str | None = None


class Organization(_Limits, kw_only=True):
    """An organization: its budget covers every team in it."""

    organization_id: str
    organization_alias: str | None = None
    models: list[str] = []
    members: list[OrgMember] = []


Record = Team | User | Customer | Organization
R = TypeVar("R", Team, User, Customer, Organization)
TYPES: dict[Kind, type[Record]] = {
    "team": Team, "user": User, "customer": Customer, "organization": Organization,
}  # fmt: skip
ID_FIELD: dict[Kind, str] = {
    "team": "team_id", "user": "user_id", "customer": "user_id",
    "organization": "organization_id",
}  # fmt: skip
_ACCOUNT_PREFIX: dict[Kind, str] = {
    "team": "team", "user": "user", "customer": "customer", "organization": "org",
}  # fmt: skip
_enc = msgspec.json.Encoder()


def account_name(kind: Kind, ident: str) -> str:
    """The budget account of the record ``ident`` of ``kind``: ``team.<id>``, ``org.<id>``...
    (a digest of the id when the id is not a valid account name: a customer's may be any)."""
    name = f"{_ACCOUNT_PREFIX[kind]}.{ident}"
    if ACCOUNT_NAME.match(name):
        return name
    return f"{_ACCOUNT_PREFIX[kind]}.{hashlib.sha256(ident.encode()).hexdigest()[:32]}"


def member_account(team_id: str, user_id: str) -> str:
    """The budget account of ``user_id``'s spend within team ``team_id`` (under the team's);
    a slash, which no id holds, keeps the two ids apart."""
    name = f"member.{team_id}/{user_id}"
    if ACCOUNT_NAME.match(name):
        return name
    return f"member.{hashlib.sha256(f'{team_id}/{user_id}'.encode()).hexdigest()[:32]}"


def unknown_fields(items: Any, cls: type[msgspec.Struct]) -> list[str]:
    """The keys of the objects ``items`` (one or a list) that ``cls`` has no field for:
    records tolerate a later version's fields, requests must not carry typos."""
    known = {f.name for f in msgspec.structs.fields(cls)}
    found = items if isinstance(items, list) else [items]
    return sorted({k for m in found if isinstance(m, dict) for k in m if k not in known})


def member_limits(team: Team, m: Member) -> tuple[float | None, str | None, int | None, int | None]:
    """The budget (dollars), ``budget_duration``, RPM and TPM of member ``m``'s own account
    in ``team``: the member's own values, else the team's ``team_member_*`` defaults; the
    duration falls back to the team's (None: ``total``, never resets)."""
    return (
        m.max_budget_in_team if m.max_budget_in_team is not None else team.team_member_budget,
        m.budget_duration or team.team_member_budget_duration or team.budget_duration,
        m.rpm_limit if m.rpm_limit is not None else team.team_member_rpm_limit,
        m.tpm_limit if m.tpm_limit is not None else team.team_member_tpm_limit,
    )


def check_id(value: Any, field: str, *, any_text: bool = False) -> str:
    """``value`` as a record id, or InvalidRequest naming ``field``; ``any_text``: any
    non-empty string of up to 512 characters (a customer id is whatever clients send as
    ``user``)."""
    if any_text and isinstance(value, str) and 0 < len(value) <= 512:
        return value
    if not isinstance(value, str) or not _ID.match(value):
        rule = "a string of 1-512 characters" if any_text else _ID_RULE
        raise InvalidRequest(f"{field}: {value!r} is not a valid id: {rule}", param=field)
    return value


def record_id(rec: Record) -> str:
    """The id of ``rec`` (``team_id``, ``user_id`` or ``organization_id``)."""
    if isinstance(rec, Team):
        return rec.team_id
    if isinstance(rec, Organization):
        return rec.organization_id
    return rec.user_id


def kind_of(rec: Record) -> Kind:
    """The kind of ``rec``."""
    for kind, cls in TYPES.items():
        if type(rec) is cls:
            return kind
    raise TypeError(f"not a directory record: {rec!r}")


class NotFound(InvalidRequest):
    """A team, user, customer or organization that does not exist (404)."""

    status_code = 404
    code = "not_found"


class Directory:
    """The records of one key store, decoded on read (see the module docstring)."""

    def __init__(self, store: KeyStore) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._decoded: dict[str, tuple[bytes, Record]] = {}
        self._scoped: dict[str, tuple[KeyRecord, Record, KeyRecord]] = {}

    def scoped(self, key: KeyRecord) -> KeyRecord:
        """``key`` (just authenticated) with the models its team (else its user) allows, as
        LiteLLM scopes a team's keys: a key listing no models gets the team's; one listing
        some keeps those the team allows too. The key itself when neither limits models."""
        if not (key.spec.team or key.spec.user):
            return key  # no team or user to narrow it
        # The key was just authenticated, which took in other processes' writes.
        owner = self.get("team", key.spec.team, sync=False)
        if owner is None:
            owner = self.get("user", key.spec.user, sync=False)
        models = getattr(owner, "models", None)
        if not models or owner is None:
            return key
        seen = self._scoped.get(key.key_id)
        if seen is not None and seen[0] is key and seen[1] is owner:
            return seen[2]
        own = key.spec.models
        if own is None:
            narrowed = list(models)
        else:
            probe = msgspec.structs.replace(
                key, spec=msgspec.structs.replace(key.spec, models=models)
            )
            narrowed = [m for m in own if probe.allows(m)]
            narrowed += [m for m in models if m not in narrowed and key.allows(m)]
        out = msgspec.structs.replace(key, spec=msgspec.structs.replace(key.spec, models=narrowed))
        with self._lock:
            if len(self._scoped) > 100_000:
                self._scoped.clear()
            self._scoped[key.key_id] = (key, owner, out)
        return out

    def get(self, kind: Kind, ident: str | None, *, sync: bool = True) -> Record | None:
        """The record ``ident`` of ``kind``, or None; ``sync=False``: as of the store's last
        :meth:`~routeguard.budget.keys.KeyStore.sync` (several reads for one request)."""
        if not ident:
            return None
        name = f"{kind}/{ident}"
        blob = self.store.entity(name, sync=sync)
        if blob is None:
            return None
        seen = self._decoded.get(name)
        if seen is not None and seen[0] is blob:
            return seen[1]
        rec = msgspec.json.decode(blob, type=TYPES[kind])
        with self._lock:
            if len(self._decoded) > 100_000:
                self._decoded.clear()
            self._decoded[name] = (blob, rec)
        return rec

    def require(self, kind: Kind, ident: str, cls: type[R]) -> R:
        """The record ``ident`` of ``kind`` (NotFound naming it when there is none)."""
        rec = self.get(kind, ident)
        if not isinstance(rec, cls):
            field = ID_FIELD[kind]
            raise NotFound(f"{field}: no {kind} '{ident}'", param=field)
        return rec

    def list(self, kind: Kind) -> list[Record]:
        """Every record of ``kind``, oldest first."""
        cls = TYPES[kind]
        found = [msgspec.json.decode(b, type=cls) for b in self.store.entities(kind)]
        return sorted(found, key=lambda r: (r.created_at, record_id(r)))

    def put(self, rec: Record) -> None:
        """Store ``rec`` (create or replace)."""
        self.store.put_entity(f"{kind_of(rec)}/{record_id(rec)}", _enc.encode(rec))

    def delete(self, kind: Kind, ident: str) -> None:
        """Forget the record ``ident`` of ``kind``."""
        self.store.delete_entity(f"{kind}/{ident}")
