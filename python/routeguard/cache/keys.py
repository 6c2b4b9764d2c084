"""Cache keys: what makes two requests "the same question in the same situation".

A request's *partition* is its namespace (tenant + the key or user inside it when the
route's ``cache.scope`` narrows sharing + route + every parameter that changes the answer)
plus a digest of its context (the conversation's earlier messages). Entries are only ever
compared inside one partition, so a follow-up never gets an answer that depended on another
conversation, and one tenant never sees another's entries.
Inside a partition, the *exact key* is a digest of the normalised prompt: the exact tier is a
dict lookup on it, before any embedding is computed. The admin operations select entries by
:func:`prompt_digest` (the same normalisation, without the partition) and by the tenant and
route :func:`namespace_owner` reads back out of a namespace.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any, Literal
from urllib.parse import quote, unquote

import msgspec

_SPACE = re.compile(r"\s+")
_enc = msgspec.json.Encoder(order="sorted")

Context = Sequence[Mapping[str, Any]]
Scope = Literal["team", "key", "user"]
"""Who shares cache entries inside a tenant (``cache.scope``)."""


def normalise(prompt: str) -> str:
    """Unicode-normalised, case-folded, whitespace-collapsed prompt text."""
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", prompt)).strip().casefold()


def context_digest(context: Context | None) -> str:
    """A digest of the conversation so far ("" when there is none)."""
    if not context:
        return ""
    return hashlib.blake2b(_enc.encode(list(context)), digest_size=16).hexdigest()


def partition_key(namespace: str, context: Context | None = None) -> str:
    """The partition a request is cached and looked up in."""
    digest = context_digest(context)
    return f"{namespace}\x1f{digest}" if digest else namespace


def exact_key(partition: str, prompt: str) -> str:
    """The exact-tier key of a prompt inside a partition: its first :data:`NORMALISED`
    characters normalised, the rest as written (normalising a multi-megabyte prompt holds
    the GIL for a noticeable time; hashing it does not)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{partition}\x00".encode("utf-8", "surrogatepass"))
    _feed_prompt(h, prompt)
    return h.hexdigest()


def prompt_digest(prompt: str) -> str:
    """A digest of the prompt as the exact tier compares it, whatever the partition: two
    prompts have the same digest exactly when :func:`exact_key` gives them the same key
    inside any one partition (the admin API's delete and correct by prompt match on it)."""
    h = hashlib.blake2b(digest_size=16)
    _feed_prompt(h, prompt)
    return h.hexdigest()


def _feed_prompt(h: Any, prompt: str) -> None:
    """Hash the prompt's first :data:`NORMALISED` characters normalised, the rest as written."""
    h.update(normalise(prompt[:NORMALISED]).encode("utf-8", "surrogatepass"))
    if len(prompt) > NORMALISED:
        h.update(b"\x00")
        h.update(prompt[NORMALISED:].encode("utf-8", "surrogatepass"))


NORMALISED = 65_536
"""Characters of a prompt that :func:`exact_key` normalises (case, spaces, Unicode form)."""


def request_namespace(
    tenant: str, route: str, request: Mapping[str, Any], scope: Sequence[str] = ()
) -> str:
    """The namespace of a chat request: tenant, the owners inside it the entry is kept for
    (``scope``: see :func:`scope_parts`), route, and every answer-changing parameter (model,
    sampling, tools, response format, system prompt) — all but the messages. Each part is
    percent-encoded, so no two (tenant, scope, route) tuples share a namespace."""
    params = {k: v for k, v in request.items() if k not in _NOT_ANSWER_CHANGING}
    digest = hashlib.blake2b(_enc.encode(params), digest_size=12).hexdigest()
    return "/".join(quote(part, safe="") for part in (tenant, *scope, route, digest))


@lru_cache(maxsize=65_536)
def namespace_owner(namespace: str) -> tuple[str, str] | None:
    """The (tenant, route) of a namespace :func:`request_namespace` built, decoded; None for
    any other namespace (e.g. one a library user chose), which no tenant or route selects."""
    parts = namespace.split("/")
    if len(parts) < 3 or not _PARAMS_DIGEST.fullmatch(parts[-1]):
        return None
    return unquote(parts[0]), unquote(parts[-2])


_PARAMS_DIGEST = re.compile(r"[0-9a-f]{24}")


def scope_parts(scope: Scope, key: str | None, user: object) -> tuple[str, ...]:
    """Who inside a tenant shares cache entries (``cache.scope``): the whole tenant
    (``team``: no part), one virtual key (``key``), or one key's requests carrying one
    ``user`` value (``user``; requests without a ``user`` share the key's entries)."""
    if scope == "team":
        return ()
    owner = (f"key:{key or ''}",)
    if scope == "key":
        return owner
    return (*owner, f"user:{_enc.encode(user).decode()}")


_NOT_ANSWER_CHANGING = frozenset(
    {"messages", "stream", "stream_options", "user", "metadata", "store", "n", "timeout"}
)
