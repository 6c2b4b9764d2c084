"""Proxy overhead benchmark: the simulated upstream direct, through a bare passthrough,
through routeguard and through LiteLLM's proxy, in one run on the same machine.

    .venv/bin/python benches/proxy_overhead.py [--requests 2000] [--rounds 3] [--skip-litellm]

Starts the simulated upstream; ``passthrough`` (benches/passthrough.py: uvicorn + uvloop +
httptools + aiohttp, no logic: the floor for a Python proxy); ``routeguard`` on the LiteLLM
config file (master key); ``routeguard+key``, a second routeguard whose callers present a
virtual key with its own budget, RPM and TPM (auth, key lookup, limits, budget hold and
settlement all on the path); and LiteLLM's proxy pinned to litellm[proxy]==1.108.7 in an
isolated venv under .bench/ (created on first use), on the same LiteLLM config. Each
concurrency level (1, 10, 100) drives the targets in alternating rounds, so drift in the
machine's load reaches all of them alike. Prints p50/p99 latency and throughput per target,
the added latency (target minus direct) and the ratios. Not part of `make test`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / ".bench"
LITELLM_VENV = BENCH_DIR / "litellm"
LITELLM_PIN = "litellm[proxy]==1.108.7"
MASTER_KEY = "sk-bench-master"
BODY = {
    "model": "bench",
    "messages": [{"role": "user", "content": "Say something short about benchmarks."}],
    "max_tokens": 16,
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 120.0) -> None:
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


def ensure_litellm() -> Path:
    exe = LITELLM_VENV / "bin" / "litellm"
    if not exe.exists():
        print(f"installing {LITELLM_PIN} into {LITELLM_VENV} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
        subprocess.run(
            [str(LITELLM_VENV / "bin" / "pip"), "install", "-q", LITELLM_PIN], check=True
        )
    return exe


def write_config(path: Path, mock_url: str) -> None:
    # One LiteLLM-format config for both proxies: routeguard loads LiteLLM configs unchanged.
    path.write_text(
        "model_list:\n"
        "  - model_name: bench\n"
        "    litellm_params:\n"
        "      model: openai/sim-bench\n"
        f"      api_base: {mock_url}/v1\n"
        "      api_key: sk-upstream\n"
        "general_settings:\n"
        f"  master_key: {MASTER_KEY}\n"
    )


@dataclass
class Result:
    target: str
    concurrency: int
    latencies: list[float]
    wall: float
    errors: int

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies) * 1000

    @property
    def p99(self) -> float:
        xs = sorted(self.latencies)
        return xs[min(len(xs) - 1, int(len(xs) * 0.99))] * 1000

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.wall

    def merge(self, other: Result) -> None:
        """Add another round's samples to this one."""
        self.latencies += other.latencies
        self.wall += other.wall
        self.errors += other.errors


async def drive(name: str, url: str, concurrency: int, total: int, token: str) -> Result:
    payload = json.dumps(BODY).encode()
    headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
    latencies: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        # Warm up connections and any lazy initialisation on the server side.
        for _ in range(min(50, total)):
            async with session.post(url, data=payload, headers=headers) as r:
                await r.read()
        remaining = total

        async def worker() -> None:
            nonlocal remaining, errors
            while remaining > 0:
                remaining -= 1
                t0 = time.perf_counter()
                async with session.post(url, data=payload, headers=headers) as r:
                    await r.read()
                    ok = r.status == 200
                if ok:
                    latencies.append(time.perf_counter() - t0)
                else:
                    errors += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    return Result(name, concurrency, latencies, wall, errors)


def start(cmd: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        cmd,
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def keyed_config(path: Path, mock_url: str, db: Path) -> None:
    """A routeguard config with a key store, for the virtual-key target."""
    dep = {"model_name": "bench", "type": "openai", "model": "sim-bench",
           "api_base": f"{mock_url}/v1", "api_key": "sk-upstream",
           "input_cost_per_mtok": 0.15, "output_cost_per_mtok": 0.60}  # fmt: skip
    cfg = {"model_list": [dep], "server": {"master_key": MASTER_KEY, "database": str(db)}}
    path.write_text(json.dumps(cfg))


def make_key(exe: str, cfg: Path) -> str:
    """A virtual key with a budget, RPM and TPM far above what the run spends."""
    out = subprocess.run(
        [exe, "keys", "--config", str(cfg), "create", "--name", "bench", "--max-budget",
         "1000000", "--rpm", "100000000", "--tpm", "100000000000"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    key = json.loads(out).get("key")
    if not isinstance(key, str):
        raise RuntimeError(f"no key in `routeguard keys create` output: {out!r}")
    return key


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=2000, help="requests per measurement")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds per level")
    ap.add_argument("--concurrency", default="1,10,100")
    ap.add_argument("--skip-litellm", action="store_true")
    args = ap.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    here = str(Path(sys.executable).parent)  # the project's .venv when run as documented
    routeguard_exe = shutil.which("routeguard", path=here) or "routeguard"

    procs: list[subprocess.Popen[bytes]] = []
    tmp = Path(tempfile.mkdtemp(prefix="rg-bench-"))
    try:
        ports = {n: free_port() for n in ("mock", "pass", "rg", "rgkey", "ll")}
        mock = start([routeguard_exe, "mock-upstream", "--port", str(ports["mock"])])
        procs.append(mock)
        mock_url = f"http://127.0.0.1:{ports['mock']}"
        wait_ready(mock_url + "/health", mock)
        cfg = tmp / "config.yaml"
        write_config(cfg, mock_url)
        keyed = tmp / "keyed.json"
        keyed_config(keyed, mock_url, tmp / "keys.db")
        key = make_key(routeguard_exe, keyed)

        def url(port: int) -> str:
            return f"http://127.0.0.1:{port}/v1/chat/completions"

        targets = {"direct": (mock_url + "/v1/chat/completions", MASTER_KEY)}
        bare = start([sys.executable, str(Path(__file__).with_name("passthrough.py")),
                      "--port", str(ports["pass"]), "--upstream", mock_url])  # fmt: skip
        procs.append(bare)
        wait_ready(f"http://127.0.0.1:{ports['pass']}/health", bare)
        targets["passthrough"] = (url(ports["pass"]), MASTER_KEY)
        for name, conf, port, token in (
            ("routeguard", cfg, ports["rg"], MASTER_KEY),
            ("routeguard+key", keyed, ports["rgkey"], key),
        ):
            rg = start([routeguard_exe, "serve", "--config", str(conf), "--port", str(port),
                        "--log-level", "error"])  # fmt: skip
            procs.append(rg)
            wait_ready(f"http://127.0.0.1:{port}/health", rg)
            targets[name] = (url(port), token)
        if not args.skip_litellm:
            exe = ensure_litellm()
            ll = start(
                [str(exe), "--config", str(cfg), "--port", str(ports["ll"]), "--num_workers", "1"],
                env={"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"},
            )
            procs.append(ll)
            wait_ready(f"http://127.0.0.1:{ports['ll']}/health/liveliness", ll, timeout=300)
            targets["litellm"] = (url(ports["ll"]), MASTER_KEY)

        print(f"CPU: {cpu_model()}", flush=True)
        results: dict[tuple[str, int], Result] = {}
        for c in levels:
            n = args.requests if c > 1 else max(200, args.requests // 2)
            per_round = max(1, n // args.rounds)
            for _ in range(args.rounds):
                for name, (target, token) in targets.items():
                    res = asyncio.run(drive(name, target, c, per_round, token))
                    if (name, c) in results:
                        results[(name, c)].merge(res)
                    else:
                        results[(name, c)] = res
            for name in targets:
                res = results[(name, c)]
                print(
                    f"{name:>14} c={c:<4} p50={res.p50:7.3f} ms  p99={res.p99:7.3f} ms  "
                    f"{res.rps:8.0f} req/s  errors={res.errors}",
                    flush=True,
                )
        report(results, levels, list(targets))
    finally:
        for p in reversed(procs):
            stop(p)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def cpu_model() -> str:
    """The CPU's model name (with family/model/stepping on Linux)."""
    try:
        from routeguard.embed.precision import cpu_model as named

        return named()
    except ImportError:
        return "unknown CPU"


def report(results: dict[tuple[str, int], Result], levels: list[int], names: list[str]) -> None:
    print("\n| target | concurrency | p50 ms | p99 ms | added p50 ms | added p99 ms | req/s |")
    print("|---|---|---|---|---|---|---|")
    for c in levels:
        d = results[("direct", c)]
        for name in names:
            r = results[(name, c)]
            added = "" if name == "direct" else f"{r.p50 - d.p50:.3f}"
            added99 = "" if name == "direct" else f"{r.p99 - d.p99:.3f}"
            print(
                f"| {name} | {c} | {r.p50:.3f} | {r.p99:.3f} | {added} | {added99} | {r.rps:.0f} |"
            )
    print()
    for c in levels:
        d, floor = results[("direct", c)], results[("passthrough", c)]
        floor_added = max(floor.p50 - d.p50, 1e-3)
        line = [f"c={c}: added p50 vs the bare passthrough's:"]
        for name in names:
            if name in ("direct", "passthrough"):
                continue
            added = results[(name, c)].p50 - d.p50
            line.append(f"{name} {added / floor_added:.2f}x")
        print(" ".join(line))
    if "litellm" in names:
        for c in levels:
            d, rg, ll = results[("direct", c)], results[("routeguard", c)], results[("litellm", c)]
            rg_added = max(rg.p50 - d.p50, 1e-3)
            ll_added = ll.p50 - d.p50
            print(
                f"c={c}: added-latency p50 LiteLLM/routeguard = {ll_added / rg_added:.1f}x; "
                f"throughput routeguard/LiteLLM = {rg.rps / ll.rps:.1f}x"
            )


if __name__ == "__main__":
    raise SystemExit(main())
