"""Budgets as a layer of the gateway: who is charged, how much is held, and when it settles.

Per request, before anything costly (cache lookup, embedding, routing): ``chain_for``
names the accounts (the virtual key's own account when the key carries a ``max_budget``,
``rpm`` or ``tpm``, then its user, team and org that have budgets, or the configured
default account; the backend adds every ancestor) -> ``admit``: the RPM/TPM check and a
hold of the worst case, in one round trip to a remote store. The worst case is an upper
bound from byte counts (:mod:`routeguard.budget.bound`): every input source, ``n`` times
the completion bound, priced on the dearest deployment the request may reach (routing
targets, fallbacks, context-window fallbacks) -> the upstream call (or a cache hit:
``release``) -> ``settle`` to the cost from the usage the provider reported, or
``release`` if it failed. A settlement above its hold is charged all the same, logged as an
error and counted. A stream that ends before reporting usage is charged from what it sent,
never more than the complete answer could cost, never $0.

LiteLLM's teams, users, customers and organizations (:mod:`routeguard.budget.directory`,
set on :attr:`BudgetLayer.directory` by the gateway) join the chain: a key's team (under
its organization; under the team, the account of its user's own limits in the team when the
member has some: ``max_budget_in_team``, its period and RPM/TPM, or the team's defaults)
or, for a key in no team, its user; and the customer the request names
in ``user`` (a blocked customer is refused here). Their accounts are made or brought up to
date from the records on use. A chain whose accounts have different roots (a customer and a
key's team) is held as one reservation per root, all or none, settled and released together.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
import time
import uuid
from collections.abc import Sequence
from typing import Any

import msgspec

from routeguard._native import core
from routeguard.budget.accounts import Account, Accounts, Period, load_accounts, usd_to_micros
from routeguard.budget.alerts import BudgetAlerter
from routeguard.budget.bound import InputSize, completion_bound, image_tokens, measure
from routeguard.budget.bound import quote as _quote
from routeguard.budget.directory import (
    Customer,
    Directory,
    Member,
    Organization,
    Record,
    Team,
    User,
    account_name,
    kind_of,
    member_account,
    member_limits,
    record_id,
)
from routeguard.budget.keys import KeyRecord
from routeguard.budget.ledger import MAX_AMOUNT, BudgetBackend, Reservation
from routeguard.budget.memory import MemoryBudget
from routeguard.budget.spendlog import SpendLog
from routeguard.config import Config, Deployment
from routeguard.config.budgets import BudgetAccountConfig, period_from_duration
from routeguard.errors import PermissionDenied

log = logging.getLogger("routeguard.budget")
Json = dict[str, Any]
_Spec = tuple[int | None, int | None, int | None, int | None, Period]  # limit, soft, rpm, tpm


class BudgetLayer:
    """Rate checks, reservations and settlements for the gateway, over one backend."""

    def __init__(
        self,
        config: Config,
        backend: BudgetBackend | None = None,
        *,
        alerter: BudgetAlerter | None = None,
    ) -> None:
        """``backend`` and ``alerter``: a previous layer's, kept across a config reload
        (spend, holds and alerts already sent carry over)."""
        self.config = config
        self.settings = config.budget
        accounts = load_accounts(config.accounts) if config.accounts else Accounts(())
        # The accounts of the config file: a key's account hangs under one of these.
        self._configured = frozenset(accounts.by_name)
        self._key_sigs: dict[str, tuple[object, ...]] = {}
        # Key id -> (its record, the names asked for, its chain): see chain_for.
        self._key_chains: dict[str, tuple[KeyRecord, tuple[str | None, ...], tuple[str, ...]]] = {}
        self._managed_sigs: dict[str, tuple[object, ...]] = {}
        self._groups: dict[tuple[str, ...], list[tuple[str, ...]]] = {}
        # id of a deployments list -> (the list, its prices for the native quote or None).
        self._tables: dict[int, tuple[Sequence[Deployment], core.PriceTable | None]] = {}
        # Team id -> (the decoded record, its members by user id): see _member_of.
        self._members: dict[str, tuple[Team, dict[str, Member]]] = {}
        # Holds taken with a reservation on other roots (its request id -> them).
        self._linked: dict[str, list[Reservation]] = {}
        self.directory: Directory | None = None
        """Teams, users, customers and organizations (the gateway's key store's)."""
        self._usage: dict[str, tuple[float, int]] = {}  # account -> (when read, spent + held)
        self._eu_spec: _Spec | None = None  # see _end_user_spec
        # Request ids: unique across instances (random prefix) and cheap (a counter).
        self._id_prefix = uuid.uuid4().hex[:16] + "-"
        self._ids = itertools.count()
        if backend is None:
            if self.settings.backend == "redis":
                from routeguard.budget.redis import RedisBudget

                backend = RedisBudget(
                    accounts,
                    self.settings.redis_url,
                    fail_open=self.settings.fail_open,
                    default_ttl_s=self.settings.reservation_ttl,
                    wait_replicas=self.settings.redis_wait_replicas,
                    wait_timeout_ms=self.settings.redis_wait_timeout_ms,
                )
            else:
                db = config.server.database
                backend = MemoryBudget(
                    accounts,
                    default_ttl_s=self.settings.reservation_ttl,
                    spend_log=SpendLog(db) if db and db != ":memory:" else None,
                )
        self.backend = backend
        self.overages = 0
        """Settlements that cost more than their hold (each logged as an error)."""
        self.overage_micros = 0
        self._local = isinstance(backend, MemoryBudget)
        self.alerter: BudgetAlerter | None = None
        """Budget alerts (``budget_settings.alerts``), told of every settlement."""
        if config.alerts is not None:
            if alerter is not None:
                alerter.configure(config.alerts, backend)
            self.alerter = alerter or BudgetAlerter(config.alerts, backend)

    @property
    def configured_accounts(self) -> frozenset[str]:
        """The accounts the config file declares (not key or end-user accounts)."""
        return self._configured

    def chain_for(
        self,
        names: Sequence[str | None],
        key: KeyRecord | None = None,
        end_user: str | None = None,
    ) -> tuple[str, ...]:
        """The accounts among ``names`` that have budgets (else the default account), led
        by ``key``'s own account when the key carries limits (else its team's, user's or
        organization's when recorded), and by ``end_user``'s account: the recorded customer's
        of that id, else one made with ``budget_settings.end_user`` when that is set.
        PermissionDenied when the key's team or the customer is blocked."""
        # A key of no user, team or org, without an end user: its chain depends on the key's
        # record alone (a changed key is a new record), so it is worked out once.
        plain = (
            key is not None
            and not end_user
            and not (key.spec.user or key.spec.team or key.spec.org)
        )
        if plain:
            assert key is not None
            seen = self._key_chains.get(key.key_id)
            if seen is not None and seen[0] is key and seen[1] == names:
                return seen[2]
        chain = self._chain_for(names, key, end_user)
        if plain:
            assert key is not None
            if len(self._key_chains) > 100_000:
                self._key_chains.clear()
            self._key_chains[key.key_id] = (key, tuple(names), chain)
        return chain

    def _chain_for(
        self, names: Sequence[str | None], key: KeyRecord | None, end_user: str | None
    ) -> tuple[str, ...]:
        """:meth:`chain_for`, worked out."""
        known = self.backend.accounts.by_name
        chain = tuple(n for n in names if n and n in known)
        s = key.spec if key is not None else None
        if self.directory is not None and (end_user or (s and (s.team or s.user or s.org))):
            self.directory.store.sync()  # once; the reads below use what it took in
        if key is not None and self.directory is not None:
            team = self.directory.get("team", key.spec.team, sync=False)
            if isinstance(team, Team) and team.blocked:
                raise PermissionDenied(f"team '{team.team_id}' is blocked: ask an admin")
        own = self.key_account(key) if key is not None else None
        if key is not None and self.directory is not None and own is None:
            anchor = self._key_anchor(key)
            if anchor is not None and not chain:
                chain = (anchor,)
        if own is not None:
            chain = (own, *chain)
        elif not chain and self.settings.default_account:
            chain = (self.settings.default_account,)
        if not chain and self.settings.proxy_account:  # a key's own account is under it
            chain = (self.settings.proxy_account,)
        customer = self._customer(end_user) if end_user and self.directory else None
        if customer is not None:
            chain = (customer, *chain)
        elif end_user and self.settings.end_user is not None:
            chain = (self.end_user_account(end_user, chain[0] if chain else None), *chain)
        return chain

    def _key_anchor(self, key: KeyRecord) -> str | None:
        """The managed account a key is charged under: its team's (under the team's
        organization), else its user's, else its organization's; None without a record.
        A key of a team is not held to its user's budget, as in LiteLLM."""
        s = key.spec
        if any(n and n in self._configured for n in (s.user, s.team, s.org)):
            return None  # the config file's accounts carry this key, as before
        assert self.directory is not None
        team = self.directory.get("team", s.team, sync=False)
        if isinstance(team, Team):
            return self.member(team, s.user) or self.managed(team)
        user = self.directory.get("user", s.user, sync=False)
        if isinstance(user, User):
            return self.managed(user)
        org = self.directory.get("organization", s.org, sync=False)
        return self.managed(org) if isinstance(org, Organization) else None

    def _customer(self, end_user: str) -> str | None:
        """The account of the recorded customer ``end_user`` (None: not recorded);
        PermissionDenied when the customer is blocked."""
        assert self.directory is not None
        rec = self.directory.get("customer", end_user, sync=False)
        if not isinstance(rec, Customer):
            return None
        if rec.blocked:
            raise PermissionDenied(
                f"customer '{end_user}' is blocked: requests with this user are refused"
            )
        return self.managed(rec)

    def customer_region(self, end_user: str | None) -> str | None:
        """The ``allowed_model_region`` of the recorded customer ``end_user`` as of the last
        :meth:`chain_for` (None: any region)."""
        if not end_user or self.directory is None:
            return None
        rec = self.directory.get("customer", end_user, sync=False)
        return rec.allowed_model_region if isinstance(rec, Customer) else None

    def managed(self, rec: Record | None) -> str | None:
        """The budget account of a team, user, customer or organization record (under its
        organization for a team), made or brought up to date from it; one without limits
        still counts spend. None for no record."""
        if rec is None:
            return None
        parent = self.settings.proxy_account
        if isinstance(rec, Team) and rec.organization_id:
            assert self.directory is not None
            org = self.directory.get("organization", rec.organization_id, sync=False)
            if isinstance(org, Organization):
                parent = self.managed(org)
        name = account_name(kind_of(rec), record_id(rec))
        sig = (rec.max_budget, rec.budget_duration, rec.rpm_limit, rec.tpm_limit, parent)
        if self._managed_sigs.get(name) != sig or name not in self.backend.accounts.by_name:
            cfg = BudgetAccountConfig(
                name=name, parent=parent, limit=rec.max_budget, period=rec.period(),
                rpm=rec.rpm_limit, tpm=rec.tpm_limit,
            )  # fmt: skip
            self.backend.upsert(self.backend.accounts.build(cfg))
            self._managed_sigs[name] = sig
            self._groups.clear()
        return name

    def member(self, team: Team, user_id: str | None) -> str | None:
        """The account of ``user_id``'s own limits within ``team`` (:func:`member_limits`:
        its ``max_budget_in_team``, period and rate limits, else the team's
        ``team_member_*`` defaults), under the team's account, made or brought up to date;
        None when the user is not a member or the member has no limits of its own."""
        found = self._member_of(team, user_id) if user_id else None
        if found is None or user_id is None:
            return None
        limit, duration, rpm, tpm = member_limits(team, found)
        if limit is None and rpm is None and tpm is None:
            return None
        parent = self.managed(team)
        name = member_account(team.team_id, user_id)
        sig = (limit, duration, rpm, tpm, parent)
        if self._managed_sigs.get(name) != sig or name not in self.backend.accounts.by_name:
            period = "total" if duration is None else period_from_duration(duration)
            cfg = BudgetAccountConfig(name=name, parent=parent, limit=limit, period=period,
                                      rpm=rpm, tpm=tpm)  # fmt: skip
            self.backend.upsert(self.backend.accounts.build(cfg))
            self._managed_sigs[name] = sig
            self._groups.clear()
        return name

    def _member_of(self, team: Team, user_id: str) -> Member | None:
        """``team``'s (first) member ``user_id``, from an index of its members built once per
        decoded record: every request of a team's key asks, and a team may have thousands."""
        seen = self._members.get(team.team_id)
        if seen is None or seen[0] is not team:
            index: dict[str, Member] = {}
            for m in team.members_with_roles:
                if m.user_id is not None:
                    index.setdefault(m.user_id, m)
            if len(self._members) > 100_000:
                self._members.clear()
            seen = self._members[team.team_id] = (team, index)
        return seen[1].get(user_id)

    def end_user_account(self, end_user: str, parent: str | None) -> str:
        """The account of ``end_user`` under ``parent`` (created on first use with the
        ``budget_settings.end_user`` limits): one per caller, so two tenants' end users
        with the same id never share a budget. A transient account: the backend drops it
        once idle, past its ``keep`` (:mod:`routeguard.budget.transient`)."""
        name = _end_user_name(end_user, parent)
        acc = self.backend.accounts.by_name.get(name)
        if acc is None:
            self._make_end_user(name, parent)
        elif (acc.limit, acc.soft_limit, acc.rpm, acc.tpm, acc.period) != self._end_user_spec(acc):
            # A reload changed them: the backend applies them (a new period once nothing
            # is held or in flight on it, its spend carried over).
            self._make_end_user(name, parent)
        return name

    def _make_end_user(self, name: str, parent: str | None) -> None:
        """Make the end-user account ``name`` under ``parent`` with the configured limits."""
        spec = self.settings.end_user
        assert spec is not None
        cfg = BudgetAccountConfig(name=name, parent=parent, **msgspec.structs.asdict(spec))
        self.backend.upsert(self.backend.accounts.build(cfg), transient=True)

    def _end_user_spec(self, acc: Account) -> _Spec:
        """The configured end-user limits in micro-dollars, RPM, TPM and period, as an
        account made now would carry them (worked out once per layer)."""
        spec = self._eu_spec
        if spec is None:
            conf = self.settings.end_user
            assert conf is not None
            cfg = BudgetAccountConfig(name=acc.name, **msgspec.structs.asdict(conf))
            made = self.backend.accounts.build(cfg)
            spec = self._eu_spec = (made.limit, made.soft_limit, made.rpm, made.tpm, made.period)
        return spec

    def key_account(self, key: KeyRecord) -> str | None:
        """The budget account of a virtual key with ``max_budget``/``rpm``/``tpm`` (named by
        its key id, under its user, team or org account when one is configured), created
        or brought up to date with the key's spec; None for a key without limits."""
        s = key.spec
        if s.max_budget is None and s.rpm is None and s.tpm is None:
            return None
        parent = next(
            (n for n in (s.user, s.team, s.org) if n and n in self._configured),
            None,
        )
        if parent is None and self.directory is not None:
            parent = self._key_anchor(key)
        if parent is None:
            parent = self.settings.proxy_account
        sig = (s.max_budget, s.budget_period, s.rpm, s.tpm, parent)
        if self._key_sigs.get(key.key_id) != sig:
            cfg = BudgetAccountConfig(
                name=key.key_id,
                parent=parent,
                limit=s.max_budget,
                period=s.budget_period,
                rpm=s.rpm,
                tpm=s.tpm,
            )
            self.backend.upsert(self.backend.accounts.build(cfg))
            self._key_sigs[key.key_id] = sig
            self._groups.clear()
        return key.key_id

    def _split(self, chain: tuple[str, ...]) -> list[tuple[str, ...]]:
        """``chain`` as one sub-chain per root account (usually just ``[chain]``). Its
        end-user account is made again first if the backend dropped it (idle) since
        :meth:`chain_for` named it: only a transient account leaves the registry, and only
        an end user's leads a chain, under the account that follows it."""
        if self.backend.transients.live and chain and chain[0] not in self.backend.accounts.by_name:
            self._make_end_user(chain[0], chain[1] if len(chain) > 1 else None)
        groups = self._groups.get(chain)
        if groups is not None:
            return groups
        by_root: dict[str, list[str]] = {}
        for name in chain:
            by_root.setdefault(self.backend.accounts[name].root, []).append(name)
        groups = [tuple(g) for g in by_root.values()]
        if len(self._groups) > 100_000:
            self._groups.clear()
        self._groups[chain] = groups
        return groups

    async def _hold(
        self,
        chain: tuple[str, ...],
        amount: int,
        tokens: int | None,
        ttl_s: float | None,
    ) -> Reservation:
        """Hold ``amount`` on every account of ``chain`` (rate-checked with ``tokens`` unless
        None): one reservation per root, all or none; the first is returned, the others
        are settled and released with it."""
        groups = self._split(chain)
        taken: list[Reservation] = []
        try:
            for group in groups:
                request_id = self._new_id()
                if tokens is None:
                    res = await self.backend.reserve(group, amount, request_id, ttl_s=ttl_s)
                else:
                    res = await self.backend.admit(
                        group, amount, request_id, tokens=tokens, ttl_s=ttl_s
                    )
                taken.append(res)
        except BaseException:
            for res in taken:
                await self.backend.release(res)
            raise
        self._link(taken)
        return taken[0]

    async def pressured(self, chain: tuple[str, ...], share: float, own: int = 0) -> str | None:
        """The first account of ``chain`` that has used ``share`` of its hard limit or
        passed its soft limit (spent + held, less ``own``: the caller's own hold, already
        admitted), or None. In process this reads the ledger; a shared store is asked at
        most once a second per account (readings are reused)."""
        now = time.monotonic()
        names = [n for g in self._split(chain) for n in self.backend.accounts.chain(g)]
        for name in names:
            acc = self.backend.accounts[name]
            if acc.limit is None and acc.soft_limit is None:
                continue
            seen = None if self._local else self._usage.get(name)
            if seen is None or now - seen[0] > 1.0:
                used = await self.backend.spent(name) + await self.backend.reserved(name)
                if len(self._usage) > 100_000:
                    self._usage.clear()
                self._usage[name] = (now, max(0, used - own))
                used = max(0, used - own)
            else:
                used = seen[1]
            if (acc.limit is not None and used >= share * acc.limit) or (
                acc.soft_limit is not None and used >= acc.soft_limit
            ):
                return name
        return None

    async def usage(self, name: str) -> tuple[int, int]:
        """``(spent, reserved)`` micro-dollars of account ``name`` (a report's reading): an
        end user's account dropped meanwhile reads its dormant spend in process, ``(0, 0)``
        on Redis until it is used again."""
        try:
            return await self.backend.spent(name), await self.backend.reserved(name)
        except KeyError:
            if name in self.backend.accounts.by_name or name in self._configured:
                raise
            return 0, 0

    async def check_rate(self, chain: tuple[str, ...], request: Json) -> None:
        """RPM/TPM on the chain (raises RateLimited)."""
        for group in self._split(chain):
            await self.backend.check_rate(group, tokens=measure(request).estimate())

    async def count_request(self, chain: tuple[str, ...]) -> None:
        """One request against every RPM limit of the chain, no tokens and no hold: what a
        request that reaches a model but costs nothing (token counting) takes (raises
        RateLimited)."""
        for group in self._split(chain):
            await self.backend.check_rate(group, tokens=0, requests=1)

    def worst_case(
        self, size: InputSize, completion: int, deployments: Sequence[Deployment]
    ) -> int:
        """Micro-dollars the request can cost at most: the dearest of ``deployments`` for
        ``size`` (each at its provider's image rate) and ``completion`` tokens."""
        flat = None if size.images else size.tokens()  # an image's price varies by provider
        worst = max(
            [d.cost(size.tokens(d.provider, d.model) if flat is None else flat, completion)
             for d in deployments],
            default=0.0,
        )  # fmt: skip
        return min(MAX_AMOUNT, usd_to_micros(worst, round_up=True))

    async def admit(
        self,
        chain: tuple[str, ...],
        request: Json,
        deployments: Sequence[Deployment],
        *,
        size: InputSize | None = None,
        ttl_s: float | None = None,
    ) -> Reservation:
        """RPM/TPM on the chain, then hold the chat request's worst-case cost (every input
        source, ``n`` x its completion bound, the dearest of ``deployments``) on every
        account of it: one round trip to a remote store (raises RateLimited or
        BudgetExceeded)."""
        if self._local:
            return self.admit_now(chain, request, deployments, size=size, ttl_s=ttl_s)
        return await self._hold(chain, *self._quoted(request, deployments, size), ttl_s)

    def admit_now(
        self,
        chain: tuple[str, ...],
        request: Json,
        deployments: Sequence[Deployment],
        *,
        size: InputSize | None = None,
        ttl_s: float | None = None,
    ) -> Reservation:
        """:meth:`admit` on an in-process backend (:attr:`local`): it never waits."""
        assert isinstance(self.backend, MemoryBudget)
        amount, tokens = self._quoted(request, deployments, size)
        groups = self._split(chain)
        if len(groups) == 1:
            return self.backend.admit_sync(groups[0], amount, self._new_id(), tokens, 1, ttl_s)
        taken: list[Reservation] = []
        try:
            for group in groups:
                taken.append(
                    self.backend.admit_sync(group, amount, self._new_id(), tokens, 1, ttl_s)
                )
        except BaseException:
            for res in taken:
                self.backend.release_sync(res)
            raise
        self._link(taken)
        return taken[0]

    def _quoted(
        self, request: Json, deployments: Sequence[Deployment], size: InputSize | None
    ) -> tuple[int, int]:
        """What :meth:`admit` holds and rate-checks for ``request``: ``(micro-dollars,
        estimated tokens)``, in one native call when the prices allow."""
        if size is None:
            table = self._price_table(deployments)
            if table is not None:
                quote = _quote(request, table, self.settings.default_max_tokens)
                if quote is not None:
                    return quote
            size = measure(request)
        completion = completion_bound(request, self.settings.default_max_tokens)
        return self.worst_case(size, completion, deployments), size.estimate()

    def _new_id(self) -> str:
        """A request id for one hold, unique to this layer."""
        return f"{self._id_prefix}{next(self._ids)}"

    def _link(self, taken: list[Reservation]) -> None:
        """Settle and release ``taken[1:]`` (other roots' holds) with ``taken[0]``."""
        if len(taken) > 1:
            if len(self._linked) > 100_000:  # never settled: a leak guard, not a path
                self._linked.clear()
            self._linked[taken[0].request_id] = taken[1:]

    async def reserve(
        self,
        chain: tuple[str, ...],
        request: Json,
        deployments: Sequence[Deployment],
        *,
        ttl_s: float | None = None,
    ) -> Reservation:
        """:meth:`admit` without the rate check (a second try of an admitted request on
        cheaper deployments); BudgetExceeded if even that does not fit."""
        size = measure(request)
        completion = completion_bound(request, self.settings.default_max_tokens)
        amount = self.worst_case(size, completion, deployments)
        return await self._hold(chain, amount, None, ttl_s)

    async def admit_size(
        self,
        chain: tuple[str, ...],
        size: InputSize,
        completion: int,
        deployments: Sequence[Deployment],
        *,
        ttl_s: float | None = None,
    ) -> Reservation:
        """:meth:`admit` for an input of ``size`` and at most ``completion`` output tokens
        (any endpoint that costs money: chat, embeddings)."""
        amount = self.worst_case(size, completion, deployments)
        return await self._hold(chain, amount, size.estimate(), ttl_s)

    def _price_table(self, deployments: Sequence[Deployment]) -> core.PriceTable | None:
        """``deployments``' prices for the native quote, made once per list (the gateway
        keeps one per targets); None when a price is not a finite float of at least 0
        (priced in Python, as :meth:`worst_case` does)."""
        seen = self._tables.get(id(deployments))
        if seen is not None and seen[0] is deployments:
            return seen[1]
        rows = [(d.input_cost_per_mtok, d.output_cost_per_mtok, image_tokens(d.provider, d.model))
                for d in deployments]  # fmt: skip
        table = None
        if all(type(i) is float and type(o) is float and 0 <= i < math.inf and 0 <= o < math.inf
               for i, o, _ in rows):  # fmt: skip
            table = core.PriceTable(rows)
        if len(self._tables) > 10_000:
            self._tables.clear()
        self._tables[id(deployments)] = (deployments, table)
        return table

    @property
    def local(self) -> bool:
        """Whether the backend is in this process (its calls never wait: see
        :meth:`settle_now`)."""
        return self._local

    async def settle(self, res: Reservation, deployment: Deployment, usage: dict[str, int]) -> int:
        """Charge the actual cost; returns it in micro-dollars. A cost above the hold is
        charged too (the account then refuses requests once over its limit), logged as an
        error and counted in :attr:`overages`."""
        if self._local:
            return self.settle_now(res, deployment, usage)
        actual = _charged(deployment, usage)
        overage = await self.backend.settle(res, actual)
        linked = self._linked.pop(res.request_id, ())
        for other in linked:
            await self.backend.settle(other, actual)
        self._settled(res, linked, deployment, actual, overage)
        return actual

    def settle_now(self, res: Reservation, deployment: Deployment, usage: dict[str, int]) -> int:
        """:meth:`settle` without waiting, on an in-process backend (:attr:`local`)."""
        assert isinstance(self.backend, MemoryBudget)
        actual = _charged(deployment, usage)
        overage = self.backend.settle_sync(res, actual)
        linked = self._linked.pop(res.request_id, ())
        for other in linked:
            self.backend.settle_sync(other, actual)
        self._settled(res, linked, deployment, actual, overage)
        return actual

    def _settled(
        self,
        res: Reservation,
        linked: Sequence[Reservation],
        deployment: Deployment,
        actual: int,
        overage: int,
    ) -> None:
        """After a settlement: alerts, and the overage counted and logged."""
        if self.alerter is not None:
            for held in (res, *linked):
                self.alerter.notice(held.chain)
        if overage:
            self.overages += 1
            self.overage_micros += overage
            log.error(
                "request %s on %s cost %d micro-USD more than its hold of %d: the hold was "
                "not an upper bound (charged in full)",
                res.request_id,
                deployment.id,
                overage,
                res.amount,
            )

    async def release(self, res: Reservation) -> None:
        """Nothing was spent: drop the hold."""
        await self.backend.release(res)
        for other in self._linked.pop(res.request_id, ()):
            await self.backend.release(other)

    async def close(self) -> None:
        """Send queued alerts (briefly) and close the backend's connections."""
        if self.alerter is not None:
            await self.alerter.close()
        await self.backend.close()


def _charged(deployment: Deployment, usage: dict[str, int]) -> int:
    """Micro-dollars ``usage`` on ``deployment`` is charged (rounded up, capped)."""
    cost = deployment.cost(usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0))
    return min(MAX_AMOUNT, usd_to_micros(cost, round_up=True))


def _end_user_name(end_user: str, parent: str | None) -> str:
    """``eu.<parent>.<id>`` when that is a valid account name and the parent has no dot
    (the name's first dot after ``eu.`` then ends the parent, so no two tenants' end users
    share a name: ``acme`` with ``eu.x`` against ``acme.eu`` with ``x``), else a digest of
    both (``eu.<hex>``: one dot, never a readable name's two)."""
    owner = parent or "-"
    name = f"eu.{owner}.{end_user}"
    if "." not in owner and len(name) <= 200 and not any(c.isspace() or c in "{}:" for c in name):
        return name
    digest = hashlib.sha256(f"{parent}\x00{end_user}".encode()).hexdigest()[:32]
    return f"eu.{digest}"
