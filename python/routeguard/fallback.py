"""Retries, backoff, cooldowns and fallback chains: the only place that retries.

``Fallback.run(alias, attempt)`` walks an ordered plan of aliases (the requested one, then
its ``fallbacks``); inside an alias it makes up to ``num_retries + 1`` attempts, each on a
deployment chosen by the alias's Balancer among those whose circuit is not open. Every
attempt runs under its own timeout and all of them under one overall deadline.

- retryable errors (429, 5xx, timeouts, connection errors) are retried, with exponential
  backoff and full jitter (or the upstream's Retry-After, if longer) when the retry lands
  on a deployment already tried in this request;
- deployment faults that are not retryable (401/403/404 upstream) move on at once;
- request faults (400) end the walk: no other model will accept a broken request;
- a context-window error switches the plan to the alias's ``context_window_fallbacks``;
- a content-policy refusal (ContentPolicyViolation) switches it to the alias's
  ``content_policy_fallbacks``, and ends the walk when it has none.

A deployment's circuit opens after ``allowed_fails`` consecutive failures, stays open for
``cooldown_time``, then lets exactly one probe through (half-open): success closes it,
failure opens it again. With Redis configured
(:mod:`routeguard.routing.shared`) an opened circuit is shared as a key that lives as long as
its cooldown, so every instance avoids the deployment, and a probe that succeeds removes it.
Only failures that say the upstream is unwell count
(``ProviderError.health``: connect errors, 5xx, 429, a bad key, no first byte in time); a
caller's own bad request or long answer running out of time never opens a circuit that all
callers share. When every attempt fails, one AllAttemptsFailed lists them all; when the
only obstacle was rpm/tpm limits it is a 429 with Retry-After (the next minute).
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from routeguard import scrub
from routeguard.backoff import backoff_delay
from routeguard.config import Deployment, RouterSettings
from routeguard.deadline import Deadline
from routeguard.errors import (
    AllAttemptsFailed,
    Attempt,
    ContentPolicyViolation,
    ContextWindowExceeded,
    InvalidRequest,
    ProviderError,
    UpstreamTimeout,
)
from routeguard.observe import spans
from routeguard.routing.balance import Balancer, Charge
from routeguard.routing.shared import SharedRouterState

log = scrub.guard(logging.getLogger("routeguard.fallback"))
T = TypeVar("T")
_TOO_LONG = "prompt exceeds context window"
NOT_ALLOWED = "no deployment the caller may use (allowed_model_region)"


@dataclass(slots=True)
class _Circuit:
    fails: int = 0
    open_until: float = 0.0
    probing: bool = False
    probe_started: float = 0.0  # unix seconds (shared recoveries compare it)


class Cooldowns:
    """Per-deployment circuit breakers (closed -> open -> half-open -> closed)."""

    def __init__(
        self,
        allowed_fails: int,
        cooldown_time: float,
        clock: Callable[[], float] = time.monotonic,
        shared: SharedRouterState | None = None,
    ) -> None:
        """``shared``: where circuits that open are told to every instance (None: local)."""
        self.allowed_fails = max(1, allowed_fails)
        self.cooldown_time = cooldown_time
        self._clock = clock
        self.shared = shared
        if shared is not None:
            shared.on_change = self._shared_changed
        self._circuits: dict[str, _Circuit] = {}
        # Told of every change of a circuit: (deployment id, unix time it stays open until;
        # inf while a probe is out, 0.0 once closed). The proxy's metrics set it.
        self.on_change: Callable[[str, float], None] | None = None

    def _changed(self, dep_id: str, c: _Circuit) -> None:
        """Report ``c``'s new state to ``on_change``, in wall-clock time."""
        if self.on_change is None:
            return
        if c.probing:
            until = math.inf
        elif c.open_until == 0.0:
            until = 0.0
        else:
            until = time.time() + (c.open_until - self._clock())
        self.on_change(dep_id, until)

    def _shared_changed(self, dep_id: str, until: float) -> None:
        """A cooldown shared by another instance began or ended: reported as this
        process's own unless its own circuit for ``dep_id`` is open (reported already)."""
        c = self._circuits.get(dep_id)
        if c is not None and c.open_until != 0.0 and (c.probing or self._clock() < c.open_until):
            return
        if self.on_change is not None:
            self.on_change(dep_id, until)

    def available(self, dep: Deployment) -> bool:
        """Whether a call to ``dep`` may start now (closed, or half-open with no probe out)."""
        if self.shared is not None and self.shared.cooled_until(dep.id):
            return False
        c = self._circuits.get(dep.id)
        if c is None or c.open_until == 0.0:
            return True
        return not c.probing and self._clock() >= c.open_until

    def acquire(self, dep: Deployment) -> None:
        """A call to ``dep`` starts: if its circuit is half-open, this call is the probe."""
        c = self._circuits.get(dep.id)
        if c is not None and c.open_until != 0.0:
            c.probing = True
            c.probe_started = self.shared.wall() if self.shared is not None else time.time()
            self._changed(dep.id, c)

    def is_open(self, dep: Deployment) -> bool:
        """Whether ``dep`` is cooling down (for reporting; claims nothing)."""
        if self.shared is not None and self.shared.cooled_until(dep.id):
            return True
        c = self._circuits.get(dep.id)
        return c is not None and c.open_until != 0.0 and (self._clock() < c.open_until or c.probing)

    def success(self, dep: Deployment) -> None:
        """A call to ``dep`` succeeded: close its circuit (a probe's success ends the
        shared cooldown too)."""
        c = self._circuits.get(dep.id)
        if c is not None:
            was_open = c.open_until != 0.0
            if c.probing and self.shared is not None:
                self.shared.close(dep.id, c.probe_started)
            c.fails, c.open_until, c.probing = 0, 0.0, False
            if was_open:
                self._changed(dep.id, c)

    def failure(self, dep: Deployment, retry_after: float | None = None) -> None:
        """A call to ``dep`` failed through the deployment's fault."""
        c = self._circuits.setdefault(dep.id, _Circuit())
        c.fails += 1
        if c.probing or c.fails >= self.allowed_fails:
            c.open_until = self._clock() + max(self.cooldown_time, retry_after or 0.0)
            c.probing = False
            self._changed(dep.id, c)
            if self.shared is not None:
                self.shared.open(dep.id, c.open_until)

    def release_probe(self, dep: Deployment) -> None:
        """A probe ended without a verdict on the deployment (e.g. the client's bad request)."""
        c = self._circuits.get(dep.id)
        if c is not None and c.probing:
            c.probing = False
            self._changed(dep.id, c)


@dataclass(slots=True)
class Outcome(Generic[T]):
    """What a successful walk returns: the value and how it was obtained."""

    value: T
    alias: str
    deployment: Deployment
    attempts: list[Attempt]
    upstream_s: float  # time spent waiting on upstream calls, all attempts included
    # What the call counted against the deployment's minute (Balancer.record_tokens fixes it)
    charge: Charge | None = None


Attempter = Callable[[Deployment, float], Awaitable[T]]


class Fallback:
    """Runs one operation across retries, deployments and fallback aliases."""

    def __init__(
        self,
        settings: RouterSettings,
        balancers: Mapping[str, Balancer],
        fallbacks: Mapping[str, Sequence[str]],
        context_window_fallbacks: Mapping[str, Sequence[str]],
        *,
        content_policy_fallbacks: Mapping[str, Sequence[str]] | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        shared: SharedRouterState | None = None,
    ) -> None:
        """``shared``: the Redis-shared cooldowns (None: this process's alone)."""
        self.settings = settings
        self.balancers = balancers
        self.fallbacks = fallbacks
        self.context_window_fallbacks = context_window_fallbacks
        self.content_policy_fallbacks = content_policy_fallbacks or {}
        self.default_fallbacks: Sequence[str] = settings.default_fallbacks
        self.cooldowns = Cooldowns(settings.allowed_fails, settings.cooldown_time, clock, shared)
        self.shared = shared
        self._rng = rng or random.Random()
        self._clock = clock

    def region_filter(
        self, alias: str, region: str | None, who: str = "the caller"
    ) -> Callable[[Deployment], bool] | None:
        """For :meth:`run`'s ``allowed``: only deployments in ``region`` (None: any), and a
        400 when neither ``alias`` nor its fallbacks has one there (as LiteLLM refuses a
        customer whose allowed_model_region no deployment of the model group serves)."""
        if region is None:
            return None

        def allowed(dep: Deployment) -> bool:
            return dep.serves_region(region)

        plan = self.plan(alias)
        if not any(allowed(d) for a in plan for d in self.balancers[a].deployments):
            raise InvalidRequest(
                f"model '{alias}': {who} may only be served in region '{region}' "
                f"(allowed_model_region), and no deployment of {', '.join(plan)} is there; "
                "give one region_name: " + region,
                param="model",
            )
        return allowed

    def plan(self, alias: str) -> list[str]:
        """The ordered aliases a request for ``alias`` may use (its own fallbacks, else the
        default fallbacks)."""
        chain = self.fallbacks.get(alias, self.default_fallbacks)
        return [alias, *(a for a in chain if a != alias)]

    async def run(
        self,
        alias: str,
        attempt: Attempter[T],
        *,
        fits: Callable[[Deployment], bool] | None = None,
        first_byte: bool = False,
        tokens: int = 0,
        allowed: Callable[[Deployment], bool] | None = None,
    ) -> Outcome[T]:
        """Call ``attempt(deployment, timeout)`` until one succeeds; raise AllAttemptsFailed.

        ``fits`` says whether a deployment can take the request at all (e.g. its context
        window); one that does not is skipped as if it had returned a context-window error.
        ``first_byte`` says an attempt ends at the upstream's first byte (a stream's first
        chunk), so running out of time is the upstream's fault and counts toward its
        circuit; otherwise it may be the caller's long answer and does not. ``tokens`` is
        the prompt's estimated size, for tpm limits and usage-based routing. ``allowed``
        says whether the caller may be served by a deployment at all (a customer held to a
        region): the others are never picked, and an alias with none is passed over.
        """
        s = self.settings
        if self.shared is not None:
            self.shared.ensure_running()
        deadline = self._clock() + s.deadline
        attempts: list[Attempt] = []
        upstream_s = 0.0
        plan = self.plan(alias)
        switched_to_context = switched_to_policy = False
        i = 0
        while i < len(plan):
            current = plan[i]
            i += 1
            balancer = self.balancers[current]
            failed: set[str] = set()  # deployments that failed without hope in this request
            if allowed is not None:  # never tried: as if they had failed already
                failed = {d.id for d in balancer.deployments if not allowed(d)}
                if len(failed) == len(balancer.deployments):
                    attempts.append(Attempt(current, "*", skipped=NOT_ALLOWED))
                    continue
            tried: set[str] = set()
            context_miss = False
            for n in range(s.num_retries + 1):
                remaining = deadline - self._clock()
                if remaining <= 0:
                    raise AllAttemptsFailed(alias, attempts, "overall deadline exceeded")
                dep = self._pick(balancer, tried, failed, tokens)
                if dep is None:
                    if n == 0:
                        why, wait = self._why_none(balancer, failed, tokens)
                        attempts.append(Attempt(current, "*", skipped=why, retry_after=wait))
                    break
                if fits is not None and not fits(dep):
                    attempts.append(Attempt(current, dep.id, skipped=_TOO_LONG))
                    failed.add(dep.id)
                    context_miss = True
                    continue
                self.cooldowns.acquire(dep)  # before any await: the probe is ours alone
                if dep.id in tried and n > 0:
                    last = attempts[-1].error if attempts else None
                    delay = backoff_delay(
                        n,
                        s.retry_backoff,
                        s.retry_backoff_max,
                        last.retry_after if last is not None else None,
                        self._rng,
                    )
                    if delay >= deadline - self._clock():
                        self.cooldowns.release_probe(dep)
                        raise AllAttemptsFailed(alias, attempts, "overall deadline exceeded")
                    try:
                        await asyncio.sleep(delay)
                    except BaseException:
                        self.cooldowns.release_probe(dep)
                        raise
                tried.add(dep.id)
                timeout = min(dep.timeout or s.timeout, max(0.001, deadline - self._clock()))
                charge = balancer.begin(dep, tokens)
                # Tracing's client span for this attempt (current while it runs, so the
                # upstream request carries its traceparent); None when tracing is off.
                rec = spans.recorder
                span = rec.attempt_begin(current, dep) if rec is not None else None
                t0 = self._clock()
                try:
                    async with Deadline(timeout):
                        value = await attempt(dep, timeout)
                except TimeoutError:
                    what = "no first byte" if first_byte else "no complete answer"
                    err: ProviderError = UpstreamTimeout(
                        f"{what} within {timeout:g}s", health=first_byte
                    )
                except ProviderError as exc:
                    err = exc
                except BaseException as exc:
                    if rec is not None:
                        rec.attempt_end(span, exc, first_byte, None)
                    balancer.end(dep, None, charge)
                    self.cooldowns.release_probe(dep)
                    raise
                else:
                    if rec is not None:
                        rec.attempt_end(span, None, first_byte, value)
                    elapsed = self._clock() - t0
                    upstream_s += elapsed
                    balancer.end(dep, elapsed)
                    self.cooldowns.success(dep)
                    attempts.append(Attempt(current, dep.id, None, elapsed * 1000))
                    return Outcome(value, current, dep, attempts, upstream_s, charge)
                if rec is not None:
                    rec.attempt_end(span, err, first_byte, None)
                elapsed = self._clock() - t0
                upstream_s += elapsed
                balancer.end(dep, None, charge)
                attempts.append(Attempt(current, dep.id, err, elapsed * 1000))
                # The operator's view: what upstream said and where (secrets masked); a
                # failure the caller's own request caused is no alarm.
                level = logging.WARNING if err.health else logging.INFO
                if log.isEnabledFor(level):
                    kind = type(err).__name__
                    log.log(level, "%s/%s: %s: %s", current, dep.id, kind, err.detail)
                if isinstance(err, ContextWindowExceeded):
                    self.cooldowns.release_probe(dep)
                    failed.add(dep.id)
                    context_miss = True
                    continue
                if isinstance(err, ContentPolicyViolation):
                    self.cooldowns.release_probe(dep)
                    extra = [
                        a
                        for a in self.content_policy_fallbacks.get(current, ())
                        if a not in plan[:i]
                    ]
                    if switched_to_policy or not extra:
                        raise err
                    # Only another model's policy can help: its chain replaces the rest.
                    plan = plan[:i] + extra
                    switched_to_policy = True
                    break
                if not err.fallback_ok:
                    # The request itself is at fault: no deployment will take it.
                    self.cooldowns.release_probe(dep)
                    raise err
                if err.health:
                    self.cooldowns.failure(dep, err.retry_after)
                else:
                    self.cooldowns.release_probe(dep)
                if not err.retryable:
                    failed.add(dep.id)
            if context_miss and not switched_to_context:
                extra = [
                    a for a in self.context_window_fallbacks.get(current, ()) if a not in plan[:i]
                ]
                if extra:
                    # A longer-context model is the only thing that can help now.
                    plan = plan[:i] + extra
                    switched_to_context = True
        if attempts and all(
            isinstance(a.error, ContextWindowExceeded) or a.skipped == _TOO_LONG for a in attempts
        ):
            # Only context-window misses: the client must shorten the prompt (a 400, not a 503).
            errs = [a.error for a in attempts if a.error is not None]
            raise (
                errs[-1]
                if errs
                else ContextWindowExceeded(
                    f"the prompt is longer than the context window of every model for '{alias}'"
                )
            )
        raise AllAttemptsFailed(alias, attempts)

    def _pick(
        self, balancer: Balancer, tried: set[str], failed: set[str], tokens: int
    ) -> Deployment | None:
        """A deployment not yet tried in this request if one is healthy, else a retry of one."""

        def allowed(d: Deployment) -> bool:
            return d.id not in failed and self.cooldowns.available(d)

        dep = balancer.pick(lambda d: d.id not in tried and allowed(d), tokens)
        return dep if dep is not None else balancer.pick(allowed, tokens)

    def _why_none(
        self, balancer: Balancer, failed: set[str], tokens: int
    ) -> tuple[str, float | None]:
        """Why no deployment was picked, and when to retry if only rpm/tpm limits stood
        in the way (seconds to the next minute; None otherwise)."""
        left = [d for d in balancer.deployments if d.id not in failed]
        if not left:
            return "every deployment failed", None
        if all(self.cooldowns.available(d) for d in left):
            return "every deployment is at its rpm/tpm limit", balancer.retry_in()
        if any(self.cooldowns.available(d) for d in left):
            return "every deployment is cooling down or at its rpm/tpm limit", None
        return "every deployment is cooling down", None
