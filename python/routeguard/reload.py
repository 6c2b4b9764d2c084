"""Reloading a running gateway's configuration without dropping a request.

Flow: read and validate the file again (``config.load``: a :class:`ConfigError` leaves
everything as it was) -> :func:`compare` the new config with the running one: a change a
live reload cannot make is refused (a budget account moved under another parent: its holds
and spend live along its chain), settings read once at startup are reported as waiting for a
restart (``server``, ``observability``, where the budget store is) -> build the successor
:class:`~routeguard.gateway.Gateway` over the stores that carry over (key store, budget
ledger and alerts, embedder, feedback index; the cache and each router when their settings
did not change) and warm it up -> apply the new budget accounts to the kept ledger (added,
limits changed, spend kept; a removed account stops limiting and keeps its spend). The
caller swaps the new gateway in; requests in flight finish on the one they started with, and
:func:`retire` then closes what the old one alone held.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from routeguard import config as config_mod
from routeguard.budget.ledger import BudgetBackend
from routeguard.config import BudgetAccountConfig, Config, ConfigError, ConfigProblem
from routeguard.gateway import Gateway

# budget_settings fields the budget store was built with (the others are read per request).
_STORE_FIELDS = (
    "backend",
    "redis_url",
    "fail_open",
    "reservation_ttl",
    "redis_wait_replicas",
    "redis_wait_timeout_ms",
)


@dataclass
class Reloaded:
    """A successor gateway, ready to swap in, and what the reload could not apply."""

    gateway: Gateway
    source: str
    restart_required: list[str] = field(default_factory=list)  # setting paths


def compare(old: Config, new: Config) -> tuple[list[ConfigProblem], list[str]]:
    """What refuses a live reload from ``old`` to ``new`` (problems), and the changed
    settings that take effect only after a restart."""
    problems: list[ConfigProblem] = []
    before = {a.name: a for a in old.accounts}
    for i, acc in enumerate(new.accounts):
        was = before.get(acc.name)
        if was is not None and was.parent != acc.parent:
            problems.append(
                ConfigProblem(
                    f"budgets[{i}].parent",
                    f"account '{acc.name}' moves from parent '{was.parent}' to '{acc.parent}': "
                    "a reload cannot move an account (its spend and holds are kept along its "
                    "chain); restart the proxy to move it",
                )
            )
    restart: list[str] = []
    server = dataclasses.replace(new.server, drain_seconds=old.server.drain_seconds)
    for f in dataclasses.fields(server):
        if getattr(server, f.name) != getattr(old.server, f.name):
            restart.append(f"server.{f.name}")
    for name in msgspec.structs.asdict(new.observability):
        if getattr(new.observability, name) != getattr(old.observability, name):
            restart.append(f"observability.{name}")
    for name in _STORE_FIELDS:
        if getattr(new.budget, name) != getattr(old.budget, name):
            restart.append(f"budget_settings.{name}")
    return problems, restart


def apply_accounts(
    backend: BudgetBackend,
    old: Sequence[BudgetAccountConfig],
    new: Sequence[BudgetAccountConfig],
) -> None:
    """Bring the ledger's configured accounts to ``new`` (parents first): spend is kept
    where the period did not change; an account only ``old`` has loses its limits."""
    pending = {a.name: a for a in new}
    done: set[str] = set()
    while pending:
        ready = [a for a in pending.values() if a.parent is None or a.parent not in pending]
        for acc in ready:
            backend.upsert(backend.accounts.build(acc))
            done.add(acc.name)
            del pending[acc.name]
        if not ready:  # config.load refuses cycles; this only guards the loop
            raise ValueError(f"budget accounts form a cycle: {', '.join(sorted(pending))}")
    for acc in old:
        if acc.name not in done and acc.name in backend.accounts.by_name:
            unlimited = msgspec.structs.replace(
                acc, limit=None, soft_limit=None, rpm=None, tpm=None
            )
            backend.upsert(backend.accounts.build(unlimited))


async def successor(previous: Gateway, source: str | Path | None = None) -> Reloaded:
    """The gateway that replaces ``previous``, built from ``source`` (default: the file
    ``previous`` was loaded from) and warmed up; ConfigError when the file is invalid or the
    change cannot be made live. Nothing of ``previous`` changes until its accounts are
    applied, the last step."""
    where = str(source) if source is not None else previous.config.source
    if source is None and where == "<dict>":
        raise ConfigError(
            [
                ConfigProblem(
                    "", "the proxy was built from a mapping, not a file: nothing to re-read"
                )
            ],
            source=where,
        )
    config = await asyncio.to_thread(config_mod.load, where)
    problems, restart = compare(previous.config, config)
    if problems:
        raise ConfigError(problems, source=where)
    gateway = Gateway(config, previous=previous)
    try:
        await gateway.start_cache()
        await gateway.warm_up()
        apply_accounts(gateway.budget.backend, previous.config.accounts, config.accounts)
    except ValueError as exc:
        await retire(gateway, previous)
        raise ConfigError([ConfigProblem("budgets", str(exc))], source=where) from None
    except BaseException:
        await retire(gateway, previous)
        raise
    return Reloaded(gateway, where, restart)


async def retire(old: Gateway, current: Gateway) -> None:
    """Close what ``old`` held that ``current`` does not share (its cache when a new one
    was built, its shadow checks); stores that carried over stay open."""
    if old.shadows is not None:
        await old.shadows.drain(timeout=old.config.router.deadline)
    if old.cache is not None and old.cache is not current.cache:
        await old.cache.aclose()
    if old.shared is not None and old.shared is not current.shared:
        await old.shared.aclose()  # the router's Redis settings changed
    alerter = old.budget.alerter
    if alerter is not None and alerter is not current.budget.alerter:
        await alerter.close()  # the new config has no alerts
