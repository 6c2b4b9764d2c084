"""Suite ``proxy``: what a proxy adds to a request, measured over loopback against the bundled
simulated upstream. Targets: the upstream called directly; a bare passthrough of our own
(:mod:`routeguard.bench.passthrough`: uvicorn + uvloop + httptools + aiohttp, no logic, the
floor for a Python proxy); ``routeguard serve`` on a LiteLLM-format config (master key);
``routeguard+key``, callers presenting a virtual key with its own budget, RPM and TPM;
``routeguard+tracing``, the first config with every request traced to a local OTLP sink
(:mod:`routeguard.bench.otlp_sink`; when the ``otel`` extra is installed), against tracing
off; ``routeguard/responses``, the same server's ``/v1/responses`` (passed through to the
upstream's own Responses API), against ``direct/responses``; and LiteLLM's proxy on the same
config when a ``litellm`` command is at hand (``--litellm PATH``, ``$ROUTEGUARD_BENCH_LITELLM``,
or importable here; a venv of its own keeps it out of ours), else a line saying how to add it.
Each concurrency level drives the targets in alternating rounds, so drift in the machine's
load reaches all alike. With ``$ROUTEGUARD_BENCH_PIN=1`` on two or more CPUs the proxies run
on the first and the load generator with the upstream on the others (:func:`placement`), so
a proxy is not preempted by the processes that talk to it: steadier figures at concurrency
1, but on two CPUs the load side then limits concurrency 10 and 100 (the direct calls
slow down), so it is not the default.
``benches/proxy_overhead.py`` is the same harness with its own flags and table.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from routeguard.bench.report import Row
from routeguard.bench.suite import LITELLM_ENV, Options
from routeguard.bench.timing import percentile

MASTER_KEY = "sk-bench-master"
LITELLM_PIN = "litellm[proxy]==1.108.7"
QUESTION = "Say something short about benchmarks."
BODY = {"model": "bench", "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 16}
# The same question through the Responses API (targets whose URL ends in /v1/responses).
RESPONSES_BODY = {
    "model": "bench",
    "input": QUESTION,
    "max_output_tokens": 16,
}
ROUTEGUARD = [sys.executable, "-m", "routeguard.cli"]
PIN_ENV = "ROUTEGUARD_BENCH_PIN"


def placement() -> tuple[set[int], set[int]] | None:
    """The CPUs for the proxies and for the load generator with the upstream when
    ``$ROUTEGUARD_BENCH_PIN`` is ``1``: the first CPU this process may use, and the others;
    None otherwise or on one CPU (every process then shares every CPU)."""
    if os.environ.get(PIN_ENV) != "1" or not hasattr(os, "sched_getaffinity"):
        return None
    cpus = sorted(os.sched_getaffinity(0))
    return ({cpus[0]}, set(cpus[1:])) if len(cpus) > 1 else None


def describe(pin: tuple[set[int], set[int]] | None) -> str:
    """Where the bench's processes ran, for a table's caption."""
    if pin is None:
        return "every process on every CPU"
    servers, clients = pin
    listed = ", ".join(str(c) for c in sorted(clients))
    return f"proxies on CPU {min(servers)}, load generator and upstream on CPU {listed}"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 120.0) -> None:
    """Poll ``url`` until it answers 200, or raise if the process exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: process exited with {proc.returncode}")
        try:
            req = urllib.request.Request(url, headers={"authorization": f"Bearer {MASTER_KEY}"})
            with urllib.request.urlopen(req, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"{url} not ready after {timeout}s")


def litellm_executable() -> Path | None:
    """LiteLLM's proxy command beside this interpreter, when ``litellm`` is importable here."""
    if importlib.util.find_spec("litellm") is None:
        return None
    exe = shutil.which("litellm", path=str(Path(sys.executable).parent))
    return Path(exe) if exe else None


def find_litellm(explicit: Path | None = None) -> tuple[Path | None, str]:
    """LiteLLM's ``litellm`` command: ``explicit``, else ``$ROUTEGUARD_BENCH_LITELLM``, else one
    beside this interpreter; with a line saying where it came from, or why there is none."""
    named = explicit or (Path(os.environ[LITELLM_ENV]) if os.environ.get(LITELLM_ENV) else None)
    if named is not None:
        source = "--litellm" if explicit else f"${LITELLM_ENV}"
        if named.is_file() and os.access(named, os.X_OK):
            return named, f"LiteLLM: {named} (from {source})"
        return None, f"LiteLLM left out: {named} (from {source}) is not an executable file"
    found = litellm_executable()
    if found is not None:
        return found, f"LiteLLM: {found} (importable beside this Python)"
    return None, (
        f"LiteLLM left out: not installed here; install it in a venv of its own "
        f"(python -m venv /path/ll && /path/ll/bin/pip install '{LITELLM_PIN}') "
        f"and pass --litellm /path/ll/bin/litellm or set {LITELLM_ENV}"
    )


def litellm_version(exe: Path) -> str | None:
    """The ``litellm`` package version behind the ``litellm`` command ``exe`` (the Python its
    ``#!`` line names, else the one beside it, asked), or None when that cannot be told."""
    try:
        with exe.open("rb") as f:
            first = f.read(512).split(b"\n", 1)[0].decode()
    except (OSError, UnicodeDecodeError):
        return None
    python = first[2:].split() if first.startswith("#!/") else [str(exe.parent / "python")]
    try:
        out = subprocess.run(
            [*python, "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
            capture_output=True, text=True, timeout=60, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return out or None


def install_litellm(venv: Path) -> Path:
    """LiteLLM's proxy, pinned, in a virtualenv of its own under ``venv`` (made on first use)."""
    exe = venv / "bin" / "litellm"
    if not exe.exists():
        print(f"installing {LITELLM_PIN} into {venv} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", LITELLM_PIN], check=True)
    return exe


def write_config(path: Path, mock_url: str, more_models: str = "") -> None:
    """One LiteLLM-format config for both proxies: routeguard loads LiteLLM configs unchanged
    (``more_models``: further ``model_list`` entries, as YAML lines)."""
    path.write_text(
        "model_list:\n"
        "  - model_name: bench\n"
        "    litellm_params:\n"
        "      model: openai/sim-bench\n"
        f"      api_base: {mock_url}/v1\n"
        "      api_key: sk-upstream\n"
        f"{more_models}"
        "general_settings:\n"
        f"  master_key: {MASTER_KEY}\n"
    )


def tracing_config(path: Path, mock_url: str, sink_url: str, ratio: float = 1.0) -> None:
    """:func:`write_config` with requests traced (a ``ratio`` of them; default every one)
    to the OTLP sink at ``sink_url``."""
    write_config(path, mock_url)
    with path.open("a") as f:
        f.write(f"observability:\n  tracing:\n    endpoint: {sink_url}\n")
        f.write(f"    sample_ratio: {ratio}\n")


def tracing_available() -> bool:
    """Whether the ``otel`` extra is installed here (the tracing target needs it)."""
    return importlib.util.find_spec("opentelemetry.exporter.otlp.proto.http") is not None


def keyed_config(path: Path, mock_url: str, db: Path) -> None:
    """A routeguard config with a key store, for the virtual-key target."""
    dep = {"model_name": "bench", "type": "openai", "model": "sim-bench",
           "api_base": f"{mock_url}/v1", "api_key": "sk-upstream",
           "input_cost_per_mtok": 0.15, "output_cost_per_mtok": 0.60}  # fmt: skip
    cfg = {"model_list": [dep], "server": {"master_key": MASTER_KEY, "database": str(db)}}
    path.write_text(json.dumps(cfg))


def make_key(cfg: Path) -> str:
    """A virtual key with a budget, RPM and TPM far above what the run spends."""
    out = subprocess.run(
        [*ROUTEGUARD, "keys", "--config", str(cfg), "create", "--name", "bench",
         "--max-budget", "1000000", "--rpm", "100000000", "--tpm", "100000000000"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    key = json.loads(out).get("key")
    if not isinstance(key, str):
        raise RuntimeError(f"no key in `routeguard keys create` output: {out!r}")
    return key


@dataclass
class Result:
    """One target's samples at one concurrency level, over every round."""

    target: str
    concurrency: int
    latencies: list[float] = field(default_factory=list)
    wall: float = 0.0
    errors: int = 0

    @property
    def p50(self) -> float:
        """Median latency in ms."""
        return percentile(self.latencies, 50) * 1000

    @property
    def p99(self) -> float:
        """99th-percentile latency in ms."""
        return percentile(self.latencies, 99) * 1000

    @property
    def rps(self) -> float:
        """Requests completed per second of driving."""
        return len(self.latencies) / self.wall if self.wall else 0.0

    def merge(self, other: Result) -> None:
        """Add another round's samples to this one."""
        self.latencies += other.latencies
        self.wall += other.wall
        self.errors += other.errors


async def drive(name: str, url: str, concurrency: int, total: int, token: str) -> Result:
    """``total`` requests to ``url`` from ``concurrency`` closed-loop workers."""
    payload = json.dumps(RESPONSES_BODY if url.endswith("/responses") else BODY).encode()
    headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
    res = Result(name, concurrency)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        for _ in range(min(50, total)):  # warm connections and lazy server-side setup
            async with session.post(url, data=payload, headers=headers) as r:
                await r.read()
        remaining = total

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                t0 = time.perf_counter()
                async with session.post(url, data=payload, headers=headers) as r:
                    await r.read()
                    ok = r.status == 200
                if ok:
                    res.latencies.append(time.perf_counter() - t0)
                else:
                    res.errors += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        res.wall = time.perf_counter() - start
    return res


def start(
    cmd: list[str], env: dict[str, str] | None = None, cpus: set[int] | None = None
) -> subprocess.Popen[bytes]:
    """Start a server in a session of its own (so :func:`stop` ends its children too), on
    ``cpus`` when given."""
    return subprocess.Popen(
        cmd,
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=None if cpus is None else lambda: os.sched_setaffinity(0, cpus),
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's process group, SIGKILL after 10 s."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def pinned(pin: str | None) -> tuple[set[int] | None, set[int] | None]:
    """A bench's ``--pin S:C`` as (the servers' CPUs, the client's and upstream's CPUs);
    (None, None) when not pinned."""
    if not pin:
        return None, None
    server, _, client = pin.partition(":")
    return {int(server)}, {int(client)}


def start_upstream(
    cpus: set[int] | None = None, args: Sequence[str] = ()
) -> tuple[subprocess.Popen[bytes], str]:
    """The simulated upstream (``mock-upstream`` with ``args``) on a free port (on
    ``cpus``), ready: its process and URL."""
    port = free_port()
    proc = start([*ROUTEGUARD, "mock-upstream", "--port", str(port), *args], cpus=cpus)
    url = f"http://127.0.0.1:{port}"
    _ready(proc, url)
    return proc, url


def code_trees(root: Path, extra: list[str]) -> list[tuple[str, str]]:
    """A bench's code trees: ``routeguard`` (``root``'s python/ directory), then each
    ``NAME=DIR`` of its ``--code``."""
    more = [(name, code) for name, _, code in (c.partition("=") for c in extra)]
    return [("routeguard", str(root / "python")), *more]


def serve_wrapped(
    script: str, code: str, config: Path, env: dict[str, str], cpus: set[int] | None
) -> tuple[subprocess.Popen[bytes], str]:
    """``routeguard serve --config config`` under the ``--serve`` wrapper of a bench
    ``script``, importing ``code`` (a python/ directory) first, on a free port (on
    ``cpus``), ready: its process and its chat completions URL."""
    port = free_port()
    proc = start([sys.executable, script, "--serve", "serve", "--config", str(config),
                  "--port", str(port), "--log-level", "error"],
                 env={"PYTHONPATH": code, **env}, cpus=cpus)  # fmt: skip
    _ready(proc, f"http://127.0.0.1:{port}")
    return proc, f"http://127.0.0.1:{port}/v1/chat/completions"


def _ready(proc: subprocess.Popen[bytes], url: str) -> None:
    """Wait for ``url``'s /health; the process is stopped if it never answers."""
    try:
        wait_ready(url + "/health", proc)
    except BaseException:
        stop(proc)
        raise


def dumped(proc: subprocess.Popen[bytes], out: Path, timeout: float = 10.0) -> Any:
    """What a bench wrapper writes to ``out`` as JSON when sent SIGUSR1."""
    os.kill(proc.pid, signal.SIGUSR1)
    deadline = time.monotonic() + timeout
    while not out.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return json.loads(out.read_text())


def process_cpu_s(pid: int, thread: int | None = None) -> float:
    """CPU time (user + system) a process has used so far, in seconds (Linux): all its
    threads, or only ``thread`` (a thread id; the process id names its main thread)."""
    path = f"/proc/{pid}/stat" if thread is None else f"/proc/{pid}/task/{thread}/stat"
    fields = Path(path).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


Targets = dict[str, tuple[str, str]]  # name -> (URL, bearer token)


@contextmanager
def targets(litellm: Path | None, left_out: dict[str, str] | None = None) -> Iterator[Targets]:
    """Start the upstream, the passthrough, the routeguards and LiteLLM (when given; if it
    does not come up, it is left out and ``left_out`` says why), placed as :func:`placement`
    says; within the block this process, the load generator, runs beside the upstream."""
    procs: list[subprocess.Popen[bytes]] = []
    tmp = Path(tempfile.mkdtemp(prefix="rg-bench-"))
    pin = placement()
    serve, load = pin if pin is not None else (None, None)
    own = os.sched_getaffinity(0) if load is not None else None

    def url(port: int) -> str:
        return f"http://127.0.0.1:{port}/v1/chat/completions"

    try:
        ports = {n: free_port() for n in ("pass", "rg", "rgkey", "rgotel", "otlp", "ll")}
        mock, mock_url = start_upstream(load)
        procs.append(mock)
        cfg, keyed, traced = tmp / "config.yaml", tmp / "keyed.json", tmp / "traced.yaml"
        write_config(cfg, mock_url)
        keyed_config(keyed, mock_url, tmp / "keys.db")
        key = make_key(keyed)
        sink_url = None
        servers = [("routeguard", cfg, ports["rg"], MASTER_KEY),
                   ("routeguard+key", keyed, ports["rgkey"], key)]  # fmt: skip
        if tracing_available():  # the same config, every request traced to a local sink
            sink_url = f"http://127.0.0.1:{ports['otlp']}"
            sink = start([sys.executable, "-m", "routeguard.bench.otlp_sink",
                          "--port", str(ports["otlp"])], cpus=load)  # fmt: skip
            procs.append(sink)
            wait_ready(sink_url + "/health", sink)
            tracing_config(traced, mock_url, sink_url)
            servers.append(("routeguard+tracing", traced, ports["rgotel"], MASTER_KEY))
        found: Targets = {"direct": (mock_url + "/v1/chat/completions", MASTER_KEY)}
        bare = start([sys.executable, "-m", "routeguard.bench.passthrough",
                      "--port", str(ports["pass"]), "--upstream", mock_url],
                     cpus=serve)  # fmt: skip
        procs.append(bare)
        wait_ready(f"http://127.0.0.1:{ports['pass']}/health", bare)
        found["passthrough"] = (url(ports["pass"]), MASTER_KEY)
        for name, conf, port, token in servers:
            rg = start([*ROUTEGUARD, "serve", "--config", str(conf), "--port", str(port),
                        "--log-level", "error"], cpus=serve)  # fmt: skip
            procs.append(rg)
            wait_ready(f"http://127.0.0.1:{port}/health", rg)
            found[name] = (url(port), token)
            if name == "routeguard":  # its Responses overhead, against the upstream's own
                found["direct/responses"] = (mock_url + "/v1/responses", MASTER_KEY)
                responses = f"http://127.0.0.1:{port}/v1/responses"
                found["routeguard/responses"] = (responses, token)
        if litellm is not None:
            ll = start(
                [str(litellm), "--config", str(cfg), "--port", str(ports["ll"]),
                 "--num_workers", "1"],
                env={"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"},
                cpus=serve,
            )  # fmt: skip
            procs.append(ll)
            try:
                wait_ready(f"http://127.0.0.1:{ports['ll']}/health/liveliness", ll, timeout=300)
                found["litellm"] = (url(ports["ll"]), MASTER_KEY)
            except RuntimeError as exc:
                stop(ll)
                if left_out is not None:
                    left_out["proxy: LiteLLM"] = f"LiteLLM left out: did not start ({exc})"
        if load is not None:
            os.sched_setaffinity(0, load)
        yield found
        if sink_url is not None:  # a tracing figure means something only if spans left
            deadline = time.monotonic() + 10  # the SDK exports every 5 s or 512 spans
            while not _exports(sink_url):
                if time.monotonic() > deadline:
                    raise RuntimeError("routeguard+tracing exported no spans to the OTLP sink")
                time.sleep(0.5)
    finally:
        if own is not None:
            os.sched_setaffinity(0, own)
        for p in reversed(procs):
            stop(p)
        shutil.rmtree(tmp, ignore_errors=True)


def measure(
    found: Targets, levels: list[int], requests: int, rounds: int, opts: Options | None = None
) -> dict[tuple[str, int], Result]:
    """Every target at every level, in ``rounds`` alternating rounds per level."""
    results: dict[tuple[str, int], Result] = {}
    for c in levels:
        n = requests if c > 1 else max(100, requests // 2)
        per_round = max(1, n // rounds)
        for r in range(rounds):
            for name, (target, token) in found.items():
                if opts is not None:
                    opts.progress.step(f"c={c} round {r + 1}/{rounds}: {name}")
                res = asyncio.run(drive(name, target, c, per_round, token))
                results.setdefault((name, c), Result(name, c)).merge(res)
    return results


def run(opts: Options) -> list[Row]:
    """p50 latency of routeguard against the passthrough (and LiteLLM) at each level."""
    levels = [1, 10] if opts.quick else [1, 10, 100]
    litellm, why = find_litellm(opts.litellm_path) if opts.litellm else (None, "--no-litellm")
    opts.progress.step(why)
    if litellm is None:
        opts.left_out["proxy: LiteLLM"] = why
    opts.progress.step("starting servers")
    with targets(litellm, opts.left_out) as found:
        results = measure(found, levels, opts.n(2000, 300), opts.n(3, 2), opts)
    versions = {"litellm_version": v} if litellm and (v := litellm_version(litellm)) else {}
    versions["placement"] = describe(placement())
    rows = []
    for c in levels:
        direct = results[("direct", c)]
        pairs = [("routeguard", "passthrough"), ("routeguard+key", "passthrough")]
        if ("routeguard+tracing", c) in results:
            pairs.append(("routeguard+tracing", "routeguard"))
        if ("litellm", c) in results:
            pairs.append(("routeguard", "litellm"))
        if ("routeguard/responses", c) in results:  # added latency, Responses against chat
            resp, resp_direct = (
                results[("routeguard/responses", c)],
                results[("direct/responses", c)],
            )
            chat = results[("routeguard", c)]
            rows.append(
                Row("proxy", f"routeguard /v1/responses added p50, concurrency {c}",
                    resp.p50 - resp_direct.p50, chat.p50 - direct.p50,
                    "routeguard /v1/chat/completions added p50 (same server)", unit="ms",
                    detail={"ours": _detail(resp, resp_direct), "peer": _detail(chat, direct)})
            )  # fmt: skip
        for ours_name, peer_name in pairs:
            ours, peer = results[(ours_name, c)], results[(peer_name, c)]
            rows.append(
                Row("proxy", f"{ours_name}, concurrency {c}", ours.p50, peer.p50,
                    _PEERS[peer_name], unit="ms",
                    detail={"ours": _detail(ours, direct), "peer": _detail(peer, direct),
                            "direct": _detail(direct, direct), "targets": [ours_name, peer_name],
                            "concurrency": c, **versions})
            )  # fmt: skip
    return rows


def _exports(sink_url: str) -> int:
    """How many export requests the OTLP sink has received."""
    with urllib.request.urlopen(sink_url + "/stats", timeout=5) as r:
        return int(json.loads(r.read())["requests"])


_PEERS = {
    "passthrough": "bare uvicorn+aiohttp passthrough",
    "routeguard": "routeguard, tracing off (same config)",
    "litellm": "LiteLLM proxy",
}


def _detail(r: Result, direct: Result) -> dict[str, float]:
    return {
        "p50_ms": r.p50,
        "p99_ms": r.p99,
        "added_p50_ms": r.p50 - direct.p50,
        "added_p99_ms": r.p99 - direct.p99,
        "rps": r.rps,
        "errors": float(r.errors),
        "n": float(len(r.latencies)),
    }


def markdown(results: dict[tuple[str, int], Result], levels: list[int], names: list[str]) -> str:
    """The per-target latency table of ``benches/proxy_overhead.py``, with ratios after it."""
    out = [
        "| target | concurrency | p50 ms | p99 ms | added p50 ms | added p99 ms | req/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in levels:
        for name in names:
            d = results[("direct/responses" if name.endswith("/responses") else "direct", c)]
            r = results[(name, c)]
            base = name.startswith("direct")
            added = "" if base else f"{r.p50 - d.p50:.3f}"
            added99 = "" if base else f"{r.p99 - d.p99:.3f}"
            out.append(
                f"| {name} | {c} | {r.p50:.3f} | {r.p99:.3f} | {added} | {added99} | {r.rps:.0f} |"
            )
    out.append("")
    for c in levels:
        d, floor = results[("direct", c)], results[("passthrough", c)]
        floor_added = max(floor.p50 - d.p50, 1e-3)
        parts = [f"c={c}: added p50 vs the bare passthrough's:"]
        for name in names:
            if name not in ("direct", "passthrough") and not name.endswith("/responses"):
                parts.append(f"{name} {(results[(name, c)].p50 - d.p50) / floor_added:.2f}x")
        if ("routeguard/responses", c) in results:
            resp = results[("routeguard/responses", c)].p50 - results[("direct/responses", c)].p50
            chat = results[("routeguard", c)].p50 - d.p50
            parts.append(f"; /v1/responses adds {resp - chat:+.3f} ms p50 over chat")
        out.append(" ".join(parts))
    if "litellm" in names:
        for c in levels:
            d, rg, ll = results[("direct", c)], results[("routeguard", c)], results[("litellm", c)]
            rg_added = max(rg.p50 - d.p50, 1e-3)
            out.append(
                f"c={c}: added-latency p50 LiteLLM/routeguard = {(ll.p50 - d.p50) / rg_added:.1f}x;"
                f" throughput routeguard/LiteLLM = {rg.rps / ll.rps:.1f}x"
            )
    return "\n".join(out)
