"""routeguard's exception hierarchy.

Every error a user can meet derives from :class:`RouteguardError` and carries the HTTP
status and OpenAI-style ``type``/``code`` the proxy answers with, so the server turns any
of them into a clean JSON error without a lookup table. Upstream failures are
:class:`ProviderError` subclasses; each knows whether it is worth retrying, which is the
only thing ``routeguard.fallback`` asks of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from routeguard import scrub


class RouteguardError(Exception):
    """Base of every routeguard error."""

    status_code: int = 500
    error_type: str = "api_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param

    def to_openai(self) -> dict[str, Any]:
        """The error as an OpenAI-style ``{"error": {...}}`` body."""
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }


class CoreInputError(RouteguardError, ValueError):
    """The native core refused its input (a dimension mismatch, an empty vector, a bad id):
    raised by ``routeguard._core``; also a ``ValueError``."""


class CoreNotFound(RouteguardError, KeyError):
    """The native core found nothing under a key (an unknown account or calendar): raised by
    ``routeguard._core``; also a ``KeyError``."""

    def __str__(self) -> str:
        return self.message  # KeyError would quote it


@dataclass(frozen=True)
class ConfigProblem:
    """One thing wrong in a config: where (a key path like ``model_list[2].api_key``) and what."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(RouteguardError):
    """The configuration is invalid; lists every problem found, each with its key path."""

    def __init__(self, problems: list[ConfigProblem], *, source: str = "<config>") -> None:
        self.problems = problems
        self.source = source
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid config {source}: {len(problems)} problem(s)\n{lines}")


@dataclass(frozen=True)
class PolicyProblem:
    """One thing wrong in a tool-call policy: line and column (1-based), key path, reason."""

    line: int
    column: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}, column {self.column}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class PolicyError(RouteguardError):
    """A tool-call policy is invalid (rejected at load); lists every problem with its line."""

    def __init__(self, problems: list[PolicyProblem], *, source: str = "<policy>") -> None:
        self.problems = problems
        self.source = source
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid policy {source}: {len(problems)} problem(s)\n{lines}")


class ClientClosed(RouteguardError):
    """The client went away before its answer was complete (nginx's 499). Never sent: it
    marks the request in the request log, metrics and traces; what the answer cost until
    then is charged and reported as usual."""

    status_code = 499
    error_type = "client_closed_request"
    code = "client_closed_request"


class InvalidRequest(RouteguardError):
    """The client's request is malformed or asks for something impossible."""

    status_code = 400
    error_type = "invalid_request_error"


class RequestTooLarge(InvalidRequest):
    """The request body is over the configured size limit."""

    status_code = 413
    code = "request_too_large"


class ModelNotFound(InvalidRequest):
    """The requested model alias is not configured."""

    status_code = 404
    code = "model_not_found"


class RequestNotFound(InvalidRequest):
    """Feedback names a request id the gateway does not know (never served, or forgotten)."""

    status_code = 404
    code = "request_not_found"


class AuthenticationError(RouteguardError):
    """Missing or unknown credentials."""

    status_code = 401
    error_type = "authentication_error"
    code = "invalid_api_key"


class PermissionDenied(RouteguardError):
    """The caller is known but may not do this (e.g. a model outside its key's scope)."""

    status_code = 403
    error_type = "permission_error"
    code = "permission_denied"


class ProviderError(RouteguardError):
    """An upstream provider call failed. Subclasses say whether a retry can help."""

    status_code = 502
    error_type = "api_error"
    retryable: bool = False
    # A deployment-level fault (bad key, model missing upstream): do not retry the same
    # deployment, but another deployment or fallback alias may well succeed.
    fallback_ok: bool = True
    # Whether the failure says the deployment is unhealthy, so that it counts toward the
    # deployment's circuit: connect errors, 5xx, 429, a bad key, no first byte in time.
    # Anything one caller's own request can cause (a rejected request, an unknown file, a
    # long answer running out of time) must not count, or one caller could take a
    # deployment away from everyone.
    health: bool = True

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        body: Any = None,
        health: bool | None = None,
        detail: str | None = None,
    ) -> None:
        super().__init__(message)
        if status is not None:
            self.status_code = status
        if health is not None:
            self.health = health
        self.retry_after = retry_after
        self.body = body
        # For operators (logs): what the upstream said or which host failed, with secrets
        # masked. ``message`` is what callers read and never carries upstream text beyond
        # a scrubbed reason for a rejected request.
        self.detail = detail if detail is not None else message


class UpstreamRateLimited(ProviderError):
    """The provider answered 429."""

    status_code = 429
    error_type = "rate_limit_error"
    code = "rate_limit_exceeded"
    retryable = True


class UpstreamServerError(ProviderError):
    """The provider answered 5xx (or 529 overloaded)."""

    status_code = 502
    retryable = True


class UpstreamTimeout(ProviderError):
    """The attempt ran past its timeout. ``health`` is True when the upstream sent no first
    byte in time (or could not be connected to), False when an answer under way ran past
    the attempt's total time (a caller's long answer says nothing about the deployment)."""

    status_code = 504
    error_type = "timeout_error"
    code = "timeout"
    retryable = True


class UpstreamConnectionError(ProviderError):
    """The provider could not be reached (refused, reset, DNS)."""

    status_code = 502
    code = "connection_error"
    retryable = True


class StreamTruncated(UpstreamConnectionError):
    """The upstream closed a stream without its terminator (OpenAI ``[DONE]``, Anthropic
    ``message_stop``, Gemini's ``finishReason``): the answer may be cut anywhere."""

    code = "stream_truncated"


class UpstreamBadRequest(ProviderError):
    """The provider rejected the request itself: retrying or falling back will not help."""

    status_code = 400
    error_type = "invalid_request_error"
    fallback_ok = False
    health = False


class ContextWindowExceeded(UpstreamBadRequest):
    """The prompt does not fit the model's context window (a context-window fallback may)."""

    code = "context_length_exceeded"


class ContentPolicyViolation(UpstreamBadRequest):
    """The provider refused the request on content policy (OpenAI
    ``content_policy_violation``, Azure ``content_filter``): the same request fails again
    there, so it is never retried or sent to an ordinary fallback; it may go to an alias of
    ``content_policy_fallbacks``."""

    code = "content_policy_violation"


class UpstreamAuthError(ProviderError):
    """The provider refused our credentials (401/403): a deployment misconfiguration."""

    status_code = 502
    code = "upstream_authentication_error"


class UpstreamNotFound(ProviderError):
    """The provider does not know the model or endpoint (404)."""

    status_code = 502
    code = "upstream_not_found"
    health = False  # a caller's request can name what is missing (a file, a resource)


class MidStreamError(ProviderError):
    """The stream broke after chunks were already sent; too late to fall back."""

    status_code = 502
    code = "stream_interrupted"


def _usd(micros: int) -> str:
    """Micro-dollars as dollars for messages: ``$12.40``, or ``$0.0042`` below a cent."""
    if 0 < abs(micros) < 10_000:
        return f"${micros / 1_000_000:.6f}".rstrip("0")
    return f"${micros / 1_000_000:,.2f}"


class BudgetExceeded(RouteguardError):
    """A reservation would take a budget past its hard limit; the request was refused
    before any upstream call, so nothing was spent. Amounts are integer micro-dollars."""

    status_code = 429
    error_type = "budget_exceeded"
    code = "budget_exceeded"

    def __init__(
        self,
        account: str,
        *,
        spent: int,
        limit: int,
        reserved: int = 0,
        requested: int = 0,
        period: str = "this month",
        resets_at: datetime | None = None,
    ) -> None:
        self.account = account
        self.spent = spent
        self.limit = limit
        self.reserved = reserved
        self.requested = requested
        self.period = period
        self.resets_at = resets_at
        resets = f" (resets {resets_at:%Y-%m-%d})" if resets_at is not None else ""
        message = f"budget '{account}' exceeded: spent {_usd(spent)} of {_usd(limit)} {period}"
        details = []
        if requested:
            details.append(f"this request needs up to {_usd(requested)}")
        if reserved:
            details.append(f"{_usd(reserved)} is held by requests in flight")
        super().__init__(message + resets + ("; " + " and ".join(details) if details else ""))


class RateLimited(RouteguardError):
    """A requests- or tokens-per-minute limit of a budget account refused the request;
    ``retry_after`` is seconds until it would pass (None: it never can, it is too large)."""

    status_code = 429
    error_type = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(
        self, account: str, *, limit: int, unit: str, cost: int, retry_after: float | None
    ) -> None:
        self.account = account
        self.limit = limit
        self.unit = unit
        self.cost = cost
        self.retry_after = retry_after
        head = f"rate limit of '{account}' exceeded: {limit} {unit} per minute"
        if retry_after is None:
            tail = f"; this request needs {cost} {unit}, more than a minute allows (ask for less)"
        else:
            tail = f" (retry after {retry_after:.2f} s)"
        super().__init__(head + tail)


class BudgetUnavailable(RouteguardError):
    """The shared budget store (Redis) is unreachable and the budget fails closed."""

    status_code = 503
    error_type = "api_error"
    code = "budget_unavailable"


class CacheEntryNotFound(InvalidRequest):
    """No live cache entry matches what an admin operation names (e.g. a correction)."""

    status_code = 404
    code = "cache_entry_not_found"


class CacheUnavailable(RouteguardError):
    """The shared cache store (Redis) cannot be reached, so an admin operation on the cache
    cannot reach every instance."""

    status_code = 503
    error_type = "api_error"
    code = "cache_unavailable"


def _safe_message(status: int, cls: type[ProviderError]) -> str:
    """What a caller reads about an upstream failure that is not its own request's fault."""
    if cls is UpstreamRateLimited:
        what = "the upstream is rate limiting this deployment"
    elif cls is UpstreamAuthError:
        what = "the upstream refused this deployment's credentials or access"
    elif cls is UpstreamNotFound:
        what = "the upstream does not know this deployment's model or endpoint"
    elif cls is UpstreamTimeout:
        what = "the upstream timed out"
    else:
        what = "the upstream failed"
    return f"{what} (status {status})"


def error_for_status(
    status: int,
    message: str,
    *,
    retry_after: float | None = None,
    body: Any = None,
    context_window: bool = False,
    content_policy: bool = False,
) -> ProviderError:
    """Build the ProviderError subclass that matches an upstream HTTP status.

    ``message`` and ``body`` are the upstream's: both are scrubbed of secrets (``detail``
    and ``body`` keep them for logs); a caller reads the upstream's reason only when its
    own request was rejected (400-class), otherwise a fixed message naming the status.
    """
    detail = scrub.scrub(message)
    body = scrub.scrub_json(body)
    cls: type[ProviderError]
    if status == 429:
        cls = UpstreamRateLimited
    elif status >= 500:
        cls = UpstreamServerError
    elif status in (401, 403):
        cls = UpstreamAuthError
    elif status == 404:
        cls = UpstreamNotFound
    elif status == 408:
        cls = UpstreamTimeout
    elif context_window:
        cls = ContextWindowExceeded
    elif content_policy:
        cls = ContentPolicyViolation
    else:
        cls = UpstreamBadRequest
    if cls in (UpstreamBadRequest, ContextWindowExceeded, ContentPolicyViolation):
        return cls(
            scrub.for_caller(message),
            status=status if 400 <= status < 500 else 400,
            body=body,
            detail=detail,
        )
    # 403 can answer what a caller asked for (a file or resource it may not use), and an
    # upstream 408 an upload it found too slow: neither says the deployment is unwell.
    health = False if status in (403, 408) else None
    return cls(
        _safe_message(status, cls),
        retry_after=retry_after,
        body=body,
        health=health,
        detail=detail if detail.startswith("upstream status") else f"{detail} (status {status})",
    )


@dataclass
class Attempt:
    """One try at one deployment, as reported when everything failed."""

    alias: str
    deployment: str
    error: ProviderError | None = None
    elapsed_ms: float = 0.0
    skipped: str | None = None  # why the deployment was not tried (e.g. "cooling down")
    retry_after: float | None = None  # skipped at rpm/tpm limits: seconds until they reset

    def describe(self) -> str:
        """One line for error messages: ``alias/deployment: 429 rate limited (12.0 ms)``."""
        if self.skipped:
            return f"{self.alias}/{self.deployment}: skipped ({self.skipped})"
        err = self.error
        what = f"{type(err).__name__}: {err.message}" if err is not None else "ok"
        return f"{self.alias}/{self.deployment}: {what} ({self.elapsed_ms:.1f} ms)"


@dataclass
class AllAttemptsFailed(RouteguardError):
    """Every deployment and fallback failed; ``attempts`` lists each try and its error."""

    alias: str
    attempts: list[Attempt] = field(default_factory=list)
    reason: str = ""
    retry_after: float | None = field(default=None, init=False)  # set for a 429

    def __post_init__(self) -> None:
        tried = "; ".join(a.describe() for a in self.attempts) or "no deployment was available"
        why = f" ({self.reason})" if self.reason else ""
        # Each error's message is already safe; for_caller() also catches a deployment id
        # that spells out an internal host.
        RouteguardError.__init__(
            self, scrub.for_caller(f"all attempts for model '{self.alias}' failed{why}: {tried}")
        )
        errors = [a.error for a in self.attempts if a.error is not None]
        limited = [a.retry_after for a in self.attempts if a.skipped and a.retry_after is not None]
        skips = sum(a.skipped is not None for a in self.attempts)
        # The client's status follows the errors: all rate limits (upstream's, or our rpm/tpm
        # limits of the deployments) -> 429, all timeouts -> 504, otherwise the gateway could
        # not get an answer from upstream -> 503.
        if (
            (errors or limited)
            and len(limited) == skips
            and all(isinstance(e, UpstreamRateLimited) for e in errors)
        ):
            self.status_code, self.error_type, self.code = 429, "rate_limit_error", "rate_limited"
            waits = limited + [e.retry_after for e in errors if e.retry_after is not None]
            self.retry_after = min(waits) if waits else None
        elif errors and all(isinstance(e, UpstreamTimeout) for e in errors):
            self.status_code, self.error_type, self.code = 504, "timeout_error", "timeout"
        else:
            self.status_code, self.error_type, self.code = 503, "api_error", "upstream_unavailable"

    def __hash__(self) -> int:
        return id(self)

    def to_openai(self) -> dict[str, Any]:
        """OpenAI-style error body plus the list of attempts."""
        body = super().to_openai()
        body["error"]["attempts"] = [scrub.for_caller(a.describe()) for a in self.attempts]
        return body


class EnforcementError(PolicyError):
    """A runtime-enforcement check refused something (a grant, a delegation, a tool call).

    A :class:`PolicyError` with no load problems: ``except PolicyError`` catches both an
    invalid policy and an enforcement refusal; ``except EnforcementError`` only the latter.
    """

    status_code = 403
    error_type = "permission_error"
    code = "enforcement_refused"

    def __init__(self, message: str) -> None:
        self.problems = []
        self.source = "<enforcement>"
        RouteguardError.__init__(self, message)


class GrantWidened(EnforcementError):
    """A sandbox grant or delegation asked for more than its parent allows."""

    code = "grant_widened"


class DelegationError(EnforcementError):
    """A delegation chain failed verification."""

    code = "delegation_invalid"


class ForgedDelegation(DelegationError):
    """A delegation link's signature does not verify against its issuer's key."""

    code = "delegation_forged"


class DelegationExpired(DelegationError):
    """A delegation link is past its expiry."""

    code = "delegation_expired"


class DelegationWidened(DelegationError, GrantWidened):
    """A delegation link grants more (tools, time, trust, depth) than its parent."""

    code = "delegation_widened"


class BrokenDelegation(DelegationError):
    """Delegation links do not connect (issuer/audience, parent hash, depth) or are malformed."""

    code = "delegation_broken"


class AuditError(RouteguardError):
    """The audit log cannot be opened, read or written."""

    code = "audit_error"
