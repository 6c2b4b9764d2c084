"""Proxy overhead benchmark: the simulated upstream direct, through routeguard, and through
LiteLLM's proxy, in one run on the same machine, with the same config file.

    .venv/bin/python benches/proxy_overhead.py [--requests 2000] [--skip-litellm]

Starts three processes (simulated upstream, routeguard proxy, LiteLLM proxy pinned to
litellm[proxy]==1.108.7 in an isolated venv under .bench/, created on first use) and drives
each with an aiohttp client at concurrency 1, 10 and 100. Prints, per target and
concurrency, p50/p99 latency and throughput; then the added latency (proxy minus direct)
and the ratios routeguard vs LiteLLM. Not part of `make test`.
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


async def drive(name: str, url: str, concurrency: int, total: int) -> Result:
    payload = json.dumps(BODY).encode()
    headers = {"authorization": f"Bearer {MASTER_KEY}", "content-type": "application/json"}
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


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=2000, help="requests per measurement")
    ap.add_argument("--concurrency", default="1,10,100")
    ap.add_argument("--skip-litellm", action="store_true")
    args = ap.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    routeguard_exe = shutil.which("routeguard", path=str(ROOT / ".venv" / "bin")) or "routeguard"

    procs: list[subprocess.Popen[bytes]] = []
    tmp = Path(tempfile.mkdtemp(prefix="rg-bench-"))
    try:
        mock_port, rg_port, ll_port = free_port(), free_port(), free_port()
        mock = start([routeguard_exe, "mock-upstream", "--port", str(mock_port)])
        procs.append(mock)
        mock_url = f"http://127.0.0.1:{mock_port}"
        wait_ready(mock_url + "/health", mock)
        cfg = tmp / "config.yaml"
        write_config(cfg, mock_url)

        targets = {"direct": mock_url + "/v1/chat/completions"}
        rg = start(
            [
                routeguard_exe,
                "serve",
                "--config",
                str(cfg),
                "--port",
                str(rg_port),
                "--log-level",
                "error",
            ]
        )
        procs.append(rg)
        wait_ready(f"http://127.0.0.1:{rg_port}/health", rg)
        targets["routeguard"] = f"http://127.0.0.1:{rg_port}/v1/chat/completions"
        if not args.skip_litellm:
            exe = ensure_litellm()
            ll = start(
                [str(exe), "--config", str(cfg), "--port", str(ll_port), "--num_workers", "1"],
                env={"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"},
            )
            procs.append(ll)
            wait_ready(f"http://127.0.0.1:{ll_port}/health/liveliness", ll, timeout=300)
            targets["litellm"] = f"http://127.0.0.1:{ll_port}/v1/chat/completions"

        results: dict[tuple[str, int], Result] = {}
        for c in levels:
            for name, url in targets.items():
                n = args.requests if c > 1 else max(200, args.requests // 2)
                res = asyncio.run(drive(name, url, c, n))
                results[(name, c)] = res
                print(
                    f"{name:>10} c={c:<4} p50={res.p50:7.3f} ms  p99={res.p99:7.3f} ms  "
                    f"{res.rps:8.0f} req/s  errors={res.errors}",
                    flush=True,
                )
        report(results, levels, list(targets))
    finally:
        for p in reversed(procs):
            stop(p)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


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
    if "litellm" in names:
        print()
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
