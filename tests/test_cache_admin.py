"""The cache's admin operations in the library: delete by tenant, route, namespace or exact
prompt (and mixes of them), correct a cached answer, in memory and across instances on a
real redis-server; and ``SemanticCache()`` taking its defaults from where the proxy does.

Propagation is awaited on a condition (the writer's ``flush``, the reader's ``caught_up``),
never a sleep.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import pytest
import redis.asyncio as aioredis

from embedders import WordsEmbedder
from routeguard import defaults
from routeguard.cache.keys import exact_key, namespace_owner, prompt_digest, request_namespace
from routeguard.cache.redis_store import RedisStore
from routeguard.cache.semantic import SemanticCache
from routeguard.cache.state import Selector
from routeguard.cache.verify import HitVerifier
from routeguard.config import CacheSettings

Factory = Callable[..., Awaitable[SemanticCache]]
REQ = {"model": "m", "messages": []}


def ns(tenant: str, route: str, scope: tuple[str, ...] = ()) -> str:
    """A namespace as the gateway builds it."""
    return request_namespace(tenant, route, {**REQ, "model": route}, scope)


def fill(cache: SemanticCache) -> None:
    """The same two prompts for two tenants on two routes."""
    for tenant in ("team:/a", "team:/b"):
        for route in ("fast", "smart"):
            cache.put("What is our refund policy?", f"{tenant} {route} refunds", ns(tenant, route))
            cache.put("How do I reset my password?", f"{tenant} {route} reset", ns(tenant, route))


def answers(cache: SemanticCache) -> set[str]:
    return {e.response for e in cache._state.entries.values()}


# --------------------------------------------------------------------------- keys


def test_namespace_owner_reads_what_request_namespace_wrote() -> None:
    assert namespace_owner(ns("team:acme/ml", "fast")) == ("team:acme/ml", "fast")
    assert namespace_owner(ns("key:k1", "a/b", ("key:k1", 'user:"u"'))) == ("key:k1", "a/b")
    assert namespace_owner("default") is None  # a library user's namespace
    assert namespace_owner("x/y/not-a-digest") is None


def test_prompt_digest_follows_the_exact_tier() -> None:
    a, b, c = "What is  the CAPITAL of France?", "what is the capital of france?", "Paris?"
    assert prompt_digest(a) == prompt_digest(b) != prompt_digest(c)
    for part in ("p1", "p2"):  # same digest exactly when the exact key is the same
        assert (exact_key(part, a) == exact_key(part, b)) and exact_key(part, a) != exact_key(
            part, c
        )


def test_selector_fields_round_trip() -> None:
    for sel in (
        Selector(),
        Selector(namespace="n"),
        Selector(tenant="team:/a"),
        Selector(tenant="t", route="r", prompt=prompt_digest("q")),
        Selector(namespace="n", prompt="d"),
    ):
        assert Selector.parse(sel.field()) == sel
    assert Selector().field() == "*" and Selector(namespace="n").field() == "ns:n"
    assert Selector.parse("sel:not json") is None and Selector.parse("future:x") is None


# --------------------------------------------------------------------------- defaults


def test_the_library_has_the_proxys_defaults() -> None:
    cache = SemanticCache(WordsEmbedder())
    proxy = CacheSettings()
    assert cache.threshold == proxy.threshold == defaults.CACHE_THRESHOLD
    assert cache.ttl == proxy.ttl == defaults.CACHE_TTL
    assert cache.max_entries == proxy.max_entries == defaults.CACHE_MAX_ENTRIES
    assert proxy.verify is defaults.CACHE_VERIFY
    assert isinstance(cache.verifier, HitVerifier) is defaults.CACHE_VERIFY
    assert SemanticCache(WordsEmbedder(), verifier=None).verifier is None


def test_the_default_verifier_refuses_what_the_proxy_refuses() -> None:
    cache = SemanticCache(WordsEmbedder(), threshold=0.7)
    cache.put("how many legs does a spider have", "eight")
    assert cache.get("how many eyes does a spider have") is None  # one content word swapped
    assert cache.metrics.rejected == 1
    bare = SemanticCache(WordsEmbedder(), threshold=0.7, verifier=None)
    bare.put("how many legs does a spider have", "eight")
    assert bare.get("how many eyes does a spider have") is not None  # what verify: off serves


# --------------------------------------------------------------------------- memory


def test_delete_by_tenant_leaves_other_tenants_alone() -> None:
    cache = SemanticCache(WordsEmbedder())
    fill(cache)
    assert cache.invalidate(tenant="team:/a") == 4
    assert all(r.startswith("team:/b") for r in answers(cache)) and len(cache) == 4
    hit = cache.get("What is our refund policy?", ns("team:/b", "fast"))
    assert hit is not None and hit.response == "team:/b fast refunds"


@pytest.mark.parametrize(
    ("filters", "left"),
    [
        ({"route": "fast"}, 4),
        ({"tenant": "team:/a", "route": "smart"}, 6),
        ({"prompt": "  what is OUR refund policy?"}, 4),  # normalised as the exact tier does
        ({"tenant": "team:/b", "prompt": "what is our refund policy?"}, 6),
        ({"namespace": ns("team:/a", "fast"), "prompt": "how do i reset my password?"}, 7),
        ({"tenant": "team:/c"}, 8),  # no such tenant: nothing
        ({"prompt": "what is our refund"}, 8),  # an exact prompt, not a prefix or a neighbour
    ],
)
def test_delete_filters_combine(filters: dict[str, str], left: int) -> None:
    cache = SemanticCache(WordsEmbedder())
    fill(cache)
    assert cache.invalidate(**filters) == 8 - left
    assert len(cache) == left
    for entry in cache._state.entries.values():  # what is left matches none of the filters
        assert not cache._state.selects(Selector(**_sel(filters)), entry)


def _sel(filters: dict[str, str]) -> dict[str, str]:
    out = dict(filters)
    if "prompt" in out:
        out["prompt"] = prompt_digest(out["prompt"])
    return out


def test_a_library_namespace_is_not_selected_by_tenant_or_route() -> None:
    cache = SemanticCache(WordsEmbedder())
    cache.put("hello there", "hi", namespace="default")
    assert cache.invalidate(tenant="default") == 0 and cache.invalidate(route="default") == 0
    assert cache.invalidate(prompt="HELLO   there") == 1


def test_correct_replaces_the_answer_in_place() -> None:
    cache = SemanticCache(WordsEmbedder(), ttl=100)
    fill(cache)
    before = {e.key: e for e in cache._state.entries.values()}
    n = cache.correct("what is our refund policy?", "30 days, no questions", tenant="team:/a")
    assert n == 2  # both routes of tenant a
    for route in ("fast", "smart"):
        hit = cache.get("What is our refund policy?", ns("team:/a", route))
        assert hit is not None and hit.response == "30 days, no questions"
        assert "corrected" in hit.metadata
        old = before[hit.key]
        entry = cache._state.entries[hit.key]
        assert (entry.created, entry.expires) == (old.created, old.expires)
        assert entry.version != old.version
        para = cache.get("our refund policy, what is it?", ns("team:/a", route))  # semantic
        assert para is not None and para.response == "30 days, no questions"
    other = cache.get("What is our refund policy?", ns("team:/b", "fast"))
    assert other is not None and other.response == "team:/b fast refunds"  # tenant b untouched
    assert cache.correct("what is our refund policy?", "x", tenant="team:/c") == 0
    shaped = cache.correct("How do I reset my password?", lambda old: f"{old}!", tenant="team:/b")
    assert shaped == 2 and "team:/b fast reset!" in answers(cache)


# --------------------------------------------------------------------------- redis


@pytest.fixture
def prefix() -> str:
    return f"adm-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def make(redis_server: str, prefix: str) -> AsyncIterator[Factory]:
    """``await make(**cache_kwargs)``: a started cache on the shared prefix, closed after."""
    async with AsyncExitStack() as stack:

        async def factory(**kwargs: Any) -> SemanticCache:
            store = RedisStore(redis_server, prefix=prefix, block_ms=200)
            cache = SemanticCache(WordsEmbedder(), store=store, **kwargs)
            return await stack.enter_async_context(cache)

        yield factory


async def sync(writer: SemanticCache, reader: SemanticCache) -> None:
    """Wait until ``writer``'s writes are in Redis and ``reader`` has applied them."""
    await writer.flush()
    assert isinstance(reader.store, RedisStore)
    await reader.store.caught_up()


async def test_delete_by_tenant_reaches_every_instance(make: Factory) -> None:
    a, b = await make(), await make()
    fill(a)
    await sync(a, b)
    assert len(b) == 8
    assert b.invalidate(tenant="team:/a", route="fast") == 2
    await sync(b, a)
    assert len(a) == 6 and "team:/a fast refunds" not in answers(a)
    assert "team:/b fast refunds" in answers(a)
    c = await make()  # a new instance loads the rule and sees the same
    assert answers(c) == answers(a)


async def test_a_prompt_delete_covers_entries_this_instance_does_not_hold(
    make: Factory, redis_server: str, prefix: str
) -> None:
    a = await make()
    b = await make(max_entries=2)  # its LRU keeps only the last two of a's puts
    fill(a)
    await sync(a, b)
    assert len(b) == 2
    assert b.invalidate(prompt="What is our refund policy?") == 1  # the one it holds
    await sync(b, a)
    assert len(a) == 4 and all(r.endswith("reset") for r in answers(a))
    r = aioredis.from_url(redis_server)
    try:
        assert len(await r.keys(f"{{{prefix}}}:e:*")) >= 4  # still stored, dead by the rule
    finally:
        await r.aclose()
    assert answers(await make()) == answers(a)  # a restart skips them (and collects them)


async def test_a_tenant_rule_covers_a_racing_older_write(make: Factory) -> None:
    clock = [1_000.0]
    a = await make(clock=lambda: clock[0], ttl=None)  # far in the past of b's clock
    b = await make()
    b.invalidate(tenant="team:/a")
    await sync(b, a)
    a.put("written late with an old timestamp", 1, ns("team:/a", "fast"))
    a.put("same, another tenant", 2, ns("team:/b", "fast"))
    assert len(a) == 1  # dead on arrival locally
    await sync(a, b)
    assert answers(b) == {2}


async def test_a_correction_reaches_every_instance(make: Factory) -> None:
    a, b = await make(), await make()
    fill(a)
    await sync(a, b)
    assert b.correct("WHAT is our refund policy?", "corrected", tenant="team:/a") == 2
    await sync(b, a)
    for cache in (a, b):
        for route in ("fast", "smart"):
            hit = cache.get("what is our refund policy?", ns("team:/a", route))
            assert hit is not None and hit.response == "corrected"
        other = cache.get("what is our refund policy?", ns("team:/b", "fast"))
        assert other is not None and other.response == "team:/b fast refunds"
    assert isinstance(a.store, RedisStore) and a.store.stats.fetches >= 2  # fetched from Redis
    assert answers(await make()) == answers(a)  # and it is what Redis holds


async def test_a_key_delete_the_other_filters_refuse_deletes_nothing_anywhere(
    make: Factory,
) -> None:
    a, b = await make(), await make()
    key = a.put("What is our refund policy?", "refunds", ns("team:/a", "fast"))
    await sync(a, b)
    assert b.invalidate(key=key, tenant="team:/b") == 0
    assert b.invalidate(key=key, prompt="another question") == 0
    await sync(b, a)
    assert len(a) == 1 and len(b) == 1
    assert b.invalidate(key=key, tenant="team:/a", route="fast") == 1
    await sync(b, a)
    assert len(a) == 0


async def test_a_correction_reaches_entries_the_instance_evicted(make: Factory) -> None:
    a = await make()
    b = await make(max_entries=2)  # holds only tenant b's two "smart" entries
    fill(a)
    await sync(a, b)
    q = "what is our refund policy?"
    assert b.correct(q, "corrected", tenant="team:/a") == 0  # not here, but a serves them
    assert await b.pull(tenant="team:/c", prompt=q) == 0
    assert await b.pull(tenant="team:/a", route="other", prompt=q) == 0
    assert await b.pull(tenant="team:/a", route="fast", prompt="another question") == 0
    assert await b.pull(tenant="team:/a", route="fast", prompt=q) == 1
    assert await b.pull(namespace=ns("team:/a", "smart"), prompt=q) == 1
    assert await b.pull(tenant="team:/a", prompt=q) == 0  # held now, at the stored version
    assert b.correct(q, "corrected", tenant="team:/a") == 2
    await sync(b, a)
    for route in ("fast", "smart"):
        hit = a.get(q, ns("team:/a", route))
        assert hit is not None and hit.response == "corrected"
    assert "team:/b fast refunds" in answers(a)
