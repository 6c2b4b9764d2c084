"""What LiteLLM's team, user, customer and organization endpoints share: reading a request's
fields into a record (each value checked against the record's type, a bad one refused with a
400 naming the field; fields we do not keep listed in ``ignored_fields``), creating, updating
and saving a record in the directory (:func:`create`, :func:`update`, :func:`save`), and the
spend and budget figures the info responses show, read from the budget store."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeVar
from urllib.parse import parse_qs

import msgspec

from routeguard.budget.accounts import micros_to_usd
from routeguard.budget.directory import ID_FIELD, TYPES, Kind, Member, R, Record, unknown_fields
from routeguard.config.budgets import period_from_duration
from routeguard.errors import InvalidRequest

if TYPE_CHECKING:
    from routeguard.gateway import Gateway

_STAMPS = frozenset({"created_at", "updated_at"})
_KIND: dict[type[Record], Kind] = {cls: kind for kind, cls in TYPES.items()}
Handler = Callable[["Gateway", dict[str, Any]], Awaitable[Any]]


def body_of(path: str, body: Any) -> dict[str, Any]:
    """The JSON object a POST carried (400 when it is something else)."""
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise InvalidRequest(f"{path} takes a JSON object")
    return body


def query_of(query: str) -> dict[str, str]:
    """A query string as a mapping (the last value of each name)."""
    return {k: v[-1] for k, v in parse_qs(query).items()}


def query_id(query: dict[str, Any], name: str, path: str, noun: str) -> str:
    """The id a GET names in ``?name=`` (400 saying how to name it when missing)."""
    ident = query.get(name)
    if not ident:
        raise InvalidRequest(f"{path} needs ?{name}=<the {noun}>", param=name)
    return str(ident)


def fields(
    data: dict[str, Any], cls: type[Record], *, skip: frozenset[str] = frozenset()
) -> tuple[dict[str, Any], list[str]]:
    """The values of ``data`` that ``cls`` keeps, each converted to its field's type (a 400
    naming the field when one does not fit), and the names of the others (ignored)."""
    types = {f.name: f.type for f in msgspec.structs.fields(cls) if f.name not in _STAMPS}
    out: dict[str, Any] = {}
    ignored = []
    for name, value in data.items():
        if name in skip:
            continue
        if name not in types:
            ignored.append(name)
            continue
        if value is None and name in ("models", "metadata", "members_with_roles", "teams"):
            continue  # LiteLLM clients send null for "unchanged"/"none"
        if name == "members_with_roles":
            _no_unknown(value, Member, name)
        try:
            out[name] = msgspec.convert(value, types[name], strict=True)
        except msgspec.ValidationError as exc:
            raise InvalidRequest(f"{name}: {exc}", param=name) from None
    _check(out)
    return out, sorted(ignored)


def _check(values: dict[str, Any]) -> None:
    """The checks a type cannot express: amounts, limits, durations, model names."""
    for name in ("max_budget", "team_member_budget"):
        budget = values.get(name)
        if budget is not None and not 0 <= budget <= 9e9:
            raise InvalidRequest(f"{name} must be from 0 to 9e9 dollars", param=name)
    _limits(values, ("rpm_limit", "tpm_limit", "team_member_rpm_limit", "team_member_tpm_limit"),
            ("budget_duration", "team_member_budget_duration"))  # fmt: skip
    for m in values.get("members_with_roles") or []:
        check_member(m)
    models = values.get("models")
    if models is not None and not all(m for m in models):
        raise InvalidRequest("models must be a list of model names", param="models")


def _limits(values: dict[str, Any], rates: tuple[str, ...], durations: tuple[str, ...]) -> None:
    """400 naming the field for a rate limit below 1 or a duration LiteLLM would not take."""
    for name in rates:
        v = values.get(name)
        if v is not None and v < 1:
            raise InvalidRequest(f"{name} must be at least 1", param=name)
    for name in durations:
        duration = values.get(name)
        if duration is not None:
            try:
                period_from_duration(duration)
            except ValueError as exc:
                raise InvalidRequest(f"{name}: {exc}", param=name) from None


def check_member(m: Member) -> None:
    """400 naming the field for a member's budget, rate limits or period out of range."""
    member_budget(m.max_budget_in_team)
    _limits(msgspec.structs.asdict(m), ("rpm_limit", "tpm_limit"), ("budget_duration",))


def _no_unknown(items: Any, cls: type[msgspec.Struct], field: str) -> None:
    """400 naming ``field`` when a member object carries a field ``cls`` does not have."""
    extra = unknown_fields(items, cls)
    if extra:
        raise InvalidRequest(f"{field}: unknown member field(s) {', '.join(extra)}", param=field)


def member_budget(value: Any) -> float | None:
    """A ``max_budget_in_team`` in dollars (None: none), or a 400 naming it."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 9e9:
        raise InvalidRequest(
            "max_budget_in_team must be a number of dollars from 0 to 9e9 (null: none)",
            param="max_budget_in_team",
        )
    return float(value)


def build(cls: type[R], values: dict[str, Any]) -> R:
    """A new record of ``cls`` from checked ``values``, stamped now."""
    now = time.time()
    try:
        return msgspec.convert({**values, "created_at": now, "updated_at": now}, cls)
    except msgspec.ValidationError as exc:  # a required field is missing
        raise InvalidRequest(str(exc)) from None


def changed(rec: R, values: dict[str, Any]) -> R:
    """``rec`` with checked ``values`` applied, stamped now."""
    return msgspec.structs.replace(rec, **values, updated_at=time.time())


def absent(gateway: Gateway, cls: type[Record], ident: str) -> None:
    """400 when a record of ``cls`` named ``ident`` already exists."""
    kind = _KIND[cls]
    if gateway.directory.get(kind, ident) is not None:
        field = ID_FIELD[kind]
        raise InvalidRequest(f"{field}: {kind} '{ident}' already exists", param=field)


def create(gateway: Gateway, cls: type[R], ident: str, values: dict[str, Any]) -> R:
    """A new record of ``cls`` named ``ident`` from checked ``values``, stored (400 when one
    exists)."""
    absent(gateway, cls, ident)
    rec = build(cls, {**values, ID_FIELD[_KIND[cls]]: ident})
    gateway.directory.put(rec)
    return rec


def records(gateway: Gateway, cls: type[R]) -> list[R]:
    """Every stored record of ``cls``."""
    return [r for r in gateway.directory.list(_KIND[cls]) if isinstance(r, cls)]


def listing(cls: type[R], show: Callable[[Gateway, R], Awaitable[dict[str, Any]]]) -> Handler:
    """A ``GET /<kind>/list`` handler: every record of ``cls``, as ``show`` shows it."""

    async def handler(gateway: Gateway, query: dict[str, Any]) -> Any:
        return [await show(gateway, r) for r in records(gateway, cls)]

    return handler


def save(gateway: Gateway, rec: R, values: dict[str, Any]) -> R:
    """``rec`` with checked ``values`` applied, stored."""
    new = changed(rec, values)
    gateway.directory.put(new)
    return new


def update(
    gateway: Gateway,
    rec: R,
    data: dict[str, Any],
    *,
    skip: frozenset[str] = frozenset(),
    check: Callable[[R, dict[str, Any]], None] | None = None,
) -> tuple[R, list[str]]:
    """``rec`` with the fields ``data`` gives (its id and ``skip`` aside) checked, passed to
    ``check`` (which raises to refuse them) and stored; and the fields ignored."""
    values, ignored = fields(data, type(rec), skip=skip | {ID_FIELD[_KIND[type(rec)]]})
    if check is not None:
        check(rec, values)
    return save(gateway, rec, values), ignored


def members(value: Any, field: str) -> list[Member]:
    """A ``member`` value (one object or a list of them) as Members, each naming a user."""
    items = value if isinstance(value, list) else [value]
    _no_unknown(items, Member, field)
    try:
        found = [msgspec.convert(m, Member, strict=True) for m in items]
    except msgspec.ValidationError as exc:
        raise InvalidRequest(f"{field}: {exc}", param=field) from None
    for m in found:
        if not m.user_id and not m.user_email:
            raise InvalidRequest(f"{field}: a member needs user_id or user_email", param=field)
        check_member(m)
    return found


def iso(ts: float | None) -> str | None:
    """Unix seconds as ISO 8601 (UTC), as LiteLLM shows dates."""
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()


async def spend(gateway: Gateway, rec: Record) -> dict[str, Any]:
    """``spend`` (this period, dollars), ``reserved`` (held by requests in flight) and
    ``budget_reset_at`` of ``rec``'s budget account."""
    layer = gateway.budget
    account = layer.managed(rec)
    if account is None:
        return {"spend": 0.0, "reserved": 0.0, "budget_reset_at": None}
    acc = layer.backend.accounts[account]
    resets = acc.period.resets_at(time.time())
    return {
        "spend": float(micros_to_usd(await layer.backend.spent(account))),
        "reserved": float(micros_to_usd(await layer.backend.reserved(account))),
        "budget_reset_at": None if resets is None else resets.isoformat(),
    }


def budget_table(rec: Record) -> dict[str, Any] | None:
    """LiteLLM's ``litellm_budget_table`` of a customer or organization (None without one)."""
    if not rec.limited():
        return None
    return {
        "max_budget": rec.max_budget,
        "budget_duration": rec.budget_duration,
        "tpm_limit": rec.tpm_limit,
        "rpm_limit": rec.rpm_limit,
    }


class _Named(Protocol):
    @property
    def user_id(self) -> str | None: ...
    @property
    def user_email(self) -> str | None: ...


_M = TypeVar("_M", bound=_Named)


def named_member(members: Iterable[_M], data: dict[str, Any]) -> _M | None:
    """The member that ``data``'s ``user_id`` (else ``user_email``) names, None if none; a
    400 naming ``user_id`` when the request names neither."""
    user_id, email = data.get("user_id"), data.get("user_email")
    if not user_id and not email:
        raise InvalidRequest("user_id or user_email is required", param="user_id")
    for m in members:
        if (user_id and m.user_id == user_id) or (not user_id and m.user_email == email):
            return m
    return None
