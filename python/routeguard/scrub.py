"""Keeping credentials and internal addresses out of what callers and logs can read.

Every configured secret (a ``config.Secret``: deployment api keys, the master key, the key
hash secret) registers its value here when it is created, and every deployment's upstream
host when a provider first calls it. Text that came from an upstream goes through
:func:`scrub` (configured secrets and key-shaped strings: ``sk-...``, ``Bearer ...``,
``x-api-key: ...``, AWS and Google keys, URL userinfo) before it is stored on an error or
logged, and through :func:`for_caller` (the same, plus upstream hosts) before a caller sees
it. :class:`ScrubFilter` applies :func:`scrub` to whole log records, tracebacks included.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any
from urllib.parse import urlsplit

MASK = "***"
HOST_MASK = "<upstream>"
_MIN_SECRET = 6  # shorter "secrets" (test placeholders like "x") would mangle every message
_MIN_HOST = 4  # the same for hosts ("http://x"); hosts match as whole names only

_lock = threading.RLock()
_secrets: set[str] = set()
_hosts: set[str] = set()
_bases: set[str] = set()
_secret_re: re.Pattern[str] | None = None
# scrub_name's results; emptied whenever the set of secrets changes (under _lock).
_names: dict[str, str] = {}
_MAX_NAME = 256  # longer strings are scrubbed every time, never memoised
_MAX_NAMES = 4096  # memo entries; the memo is emptied when full
_host_re: re.Pattern[str] | None = None

# Key-shaped strings, whoever they belong to. Order matters: URL userinfo and named values
# first, so "authorization: Bearer sk-..." loses the whole value, not only its tail.
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^/\s@?#]+@"), r"\1" + MASK + "@"),
    (
        re.compile(
            r"(?i)((?:proxy-)?authorization|[\w-]*api[-_]?key|[\w-]*secret[\w-]*|password|passwd"
            r"|[\w-]*access[-_]?token|x-goog-api-key|cookie)"
            r"(\"?'?\s*[:=]\s*\"?'?)"
            r"(?:(?:bearer|basic)\s+)?[^\s\"',;&}\]]+"
        ),
        r"\1\2" + MASK,
    ),
    # A credential after "Bearer"/"Basic" has a digit, "-" or "_" ("bearer token" is prose).
    (
        re.compile(r"(?i)\b(bearer|basic)\s+(?=[\w.~+/=\-]*[0-9_\-])[A-Za-z0-9._~+/=\-]{6,}"),
        r"\1 " + MASK,
    ),
    (re.compile(r"([?&]key=)[^&\s\"']+"), r"\1" + MASK),
    (re.compile(r"\bsk-[A-Za-z0-9_\-]{6,}"), "sk-" + MASK),
    (re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"), "AKIA" + MASK),
    (re.compile(r"\bAIza[0-9A-Za-z_\-]{30,}"), "AIza" + MASK),
)


def remember(secret: str) -> None:
    """Register a configured secret: it is masked wherever it appears from now on."""
    global _secret_re
    if len(secret) < _MIN_SECRET or secret in _secrets:
        return
    with _lock:
        _secrets.add(secret)
        _secret_re = None
        _names.clear()


def forget(secret: str) -> None:
    """Stop masking a secret that no longer works (an expired access token), so that short-
    lived credentials do not grow the pattern forever."""
    global _secret_re
    with _lock:
        if secret in _secrets:
            _secrets.discard(secret)
            _secret_re = None
            _names.clear()


def remember_upstream(api_base: str) -> None:
    """Register a deployment's upstream (its host is internal: callers never see it)."""
    global _host_re
    if api_base in _bases:
        return
    parts = urlsplit(api_base)
    with _lock:
        _bases.add(api_base)
        if parts.hostname and len(parts.hostname) >= _MIN_HOST:
            _hosts.add(parts.hostname)
            port = _port(parts.netloc)
            if port:
                _hosts.add(f"{parts.hostname}:{port}")
            _host_re = None
    if parts.password:
        remember(parts.password)


def _alternation(words: set[str], *, whole: bool = False) -> re.Pattern[str] | None:
    if not words:
        return None
    # Longest first, so "host:8000" goes before "host" and one secret inside another wins.
    alt = "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
    # Whole names only: host "gpu1" must not eat "gpu12" or "my-gpu1".
    return re.compile(rf"(?<![\w.\-])(?:{alt})(?![\w\-]|\.\w)" if whole else alt)


def scrub(text: str) -> str:
    """``text`` with configured secrets and key-shaped strings masked (for logs, errors)."""
    global _secret_re
    if not text:
        return text
    pattern = _secret_re
    if pattern is None and _secrets:
        with _lock:
            pattern = _secret_re = _alternation(_secrets)
    if pattern is not None:
        text = pattern.sub(MASK, text)
    for regex, replacement in _PATTERNS:
        text = regex.sub(replacement, text)
    return text


def scrub_name(text: str) -> str:
    """:func:`scrub` for short strings that recur (model, tool and format names in a log
    line), memoised: a repeat costs a dict lookup instead of the regex passes."""
    done = _names.get(text)
    if done is not None:
        return done
    out = scrub(text)
    if len(text) <= _MAX_NAME:
        with _lock:
            if len(_names) >= _MAX_NAMES:
                _names.clear()
            _names[text] = out
    return out


def for_caller(text: str) -> str:
    """:func:`scrub`, and upstream hosts replaced by ``<upstream>``: what a caller may read."""
    global _host_re
    text = scrub(text)
    pattern = _host_re
    if pattern is None and _hosts:
        with _lock:
            pattern = _host_re = _alternation(_hosts, whole=True)
    return pattern.sub(HOST_MASK, text) if pattern is not None and text else text


def scrub_json(value: Any) -> Any:
    """A decoded JSON value with :func:`scrub` applied to every string in it."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {scrub(str(k)): scrub_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub_json(v) for v in value]
    return value


def safe_url(url: str) -> str:
    """``scheme://host:port`` of a URL: no userinfo, path or query (Gemini's ``?key=``)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = _port(parts.netloc)
    return f"{parts.scheme}://{host}{':' + port if port else ''}"


def _port(netloc: str) -> str:
    # As written, never parsed: urlsplit's .port raises on a malformed one.
    hostport = netloc.rpartition("@")[2]
    _, sep, tail = hostport.rpartition(":")
    return tail if sep and "]" not in tail else ""


class ScrubFilter(logging.Filter):
    """Masks secrets in a log record's message and traceback before any handler sees it."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite ``record`` in place; never drops it."""
        message = record.getMessage()
        clean = scrub(message)
        if clean != message or record.args:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = scrub(record.stack_info)
        return True


_FILTER = ScrubFilter()


def guard(logger: logging.Logger) -> logging.Logger:
    """Install the scrubbing filter on ``logger`` (once) and return it."""
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
    return logger


def guard_handlers(logger: logging.Logger | None = None) -> None:
    """Install the scrubbing filter on every handler of ``logger`` (the root logger by
    default), so records of every library through them are scrubbed too."""
    for handler in (logger or logging.getLogger()).handlers:
        if _FILTER not in handler.filters:
            handler.addFilter(_FILTER)
