"""What a Responses API request costs the proxy beside a chat request, on one routeguard server.

One ``routeguard serve`` on a LiteLLM-format config with two aliases on the simulated upstream:
``bench`` (an OpenAI deployment: ``/v1/responses`` is passed through to the upstream's own
Responses API) and ``bench-claude`` (an Anthropic deployment: ``/v1/responses`` and chat are
both translated to ``/v1/messages``). Sequential requests (concurrency 1), in alternating rounds,
to: chat and Responses on each alias, and the upstream called directly (chat, Responses,
Messages). Two figures per pair: the client-side added p50 (minus the direct call the
request becomes), and the server process's CPU time per request, read from /proc around each
round, which the load of other jobs on the machine inflates far less than the wall clock.

    .venv/bin/python benches/responses_overhead.py --requests 1000 --rounds 6
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from routeguard.bench import proxy
from routeguard.bench.timing import percentile
from routeguard.embed.precision import cpu_model

QUESTION = "Say something short about benchmarks."
CHAT = {"messages": [{"role": "user", "content": QUESTION}], "max_tokens": 16}
RESPONSES = {"input": QUESTION, "max_output_tokens": 16}
MESSAGES = {"model": "sim-claude", "max_tokens": 16,
            "messages": [{"role": "user", "content": QUESTION}]}  # fmt: skip


def write_config(path: Path, mock_url: str) -> None:
    """The proxy bench's config (alias ``bench``, OpenAI) plus ``bench-claude`` (Anthropic)."""
    proxy.write_config(
        path,
        mock_url,
        "  - model_name: bench-claude\n"
        "    litellm_params:\n"
        "      model: anthropic/sim-claude\n"
        f"      api_base: {mock_url}\n"
        "      api_key: sk-ant-upstream\n",
    )


async def drive(url: str, body: dict[str, Any], headers: dict[str, str], n: int) -> list[float]:
    """``n`` sequential requests (after 20 to warm up); their latencies in seconds."""
    payload = json.dumps(body).encode()
    out: list[float] = []
    async with aiohttp.ClientSession() as session:
        for i in range(n + 20):
            t0 = time.perf_counter()
            async with session.post(url, data=payload, headers=headers) as r:
                await r.read()
                if r.status != 200:
                    raise RuntimeError(f"{url}: HTTP {r.status}")
            if i >= 20:
                out.append(time.perf_counter() - t0)
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the comparison and print a markdown table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=1000, help="requests per target per round")
    ap.add_argument("--rounds", type=int, default=6)
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="rg-resp-"))
    procs = []
    try:
        ports = {"rg": proxy.free_port()}
        mock, mock_url = proxy.start_upstream()
        procs.append(mock)
        write_config(tmp / "config.yaml", mock_url)
        rg = proxy.start([*proxy.ROUTEGUARD, "serve", "--config", str(tmp / "config.yaml"),
                          "--port", str(ports["rg"]), "--log-level", "error"])  # fmt: skip
        procs.append(rg)
        rg_url = f"http://127.0.0.1:{ports['rg']}"
        proxy.wait_ready(rg_url + "/health", rg)
        bearer = {"authorization": f"Bearer {proxy.MASTER_KEY}",
                  "content-type": "application/json"}  # fmt: skip
        anthropic = {"x-api-key": "sk-ant-upstream", "anthropic-version": "2023-06-01",
                     "content-type": "application/json"}  # fmt: skip
        # name -> (URL, body, headers, routeguard's own request?)
        targets: dict[str, tuple[str, dict[str, Any], dict[str, str], bool]] = {
            "direct chat": (mock_url + "/v1/chat/completions",
                            {"model": "sim-bench", **CHAT}, bearer, False),
            "direct responses": (mock_url + "/v1/responses",
                                 {"model": "sim-bench", **RESPONSES}, bearer, False),
            "direct messages": (mock_url + "/v1/messages", MESSAGES, anthropic, False),
            "openai: chat": (rg_url + "/v1/chat/completions",
                             {"model": "bench", **CHAT}, bearer, True),
            "openai: responses": (rg_url + "/v1/responses",
                                  {"model": "bench", **RESPONSES}, bearer, True),
            "anthropic: chat": (rg_url + "/v1/chat/completions",
                                {"model": "bench-claude", **CHAT}, bearer, True),
            "anthropic: responses": (rg_url + "/v1/responses",
                                     {"model": "bench-claude", **RESPONSES}, bearer, True),
        }  # fmt: skip
        lat: dict[str, list[float]] = {k: [] for k in targets}
        cpu: dict[str, list[float]] = {k: [] for k in targets}
        for r in range(args.rounds):
            for name, (url, body, headers, ours) in targets.items():
                c0 = proxy.process_cpu_s(rg.pid)
                lat[name] += asyncio.run(drive(url, body, headers, args.requests))
                if ours:  # the warm-up requests ran inside the window too
                    per = (proxy.process_cpu_s(rg.pid) - c0) / (args.requests + 20)
                    cpu[name].append(per * 1000)
            print(f"round {r + 1}/{args.rounds} done", flush=True)
    finally:
        for p in reversed(procs):
            proxy.stop(p)
        shutil.rmtree(tmp, ignore_errors=True)

    def p50(name: str) -> float:
        return percentile(lat[name], 50) * 1000

    def cpu50(name: str) -> float:
        return percentile(cpu[name], 50)

    direct = {"openai: chat": "direct chat", "openai: responses": "direct responses",
              "anthropic: chat": "direct messages",
              "anthropic: responses": "direct messages"}  # fmt: skip
    load = os.getloadavg()
    print(f"\nCPU: {cpu_model()}, {os.cpu_count()} cores, load average (1 min) {load[0]:.1f}; "
          f"{args.rounds} rounds x {args.requests} sequential requests per target\n")  # fmt: skip
    print("| deployment | endpoint | p50 ms | added p50 ms | server CPU ms/request (median "
          "of rounds; min-max) |")  # fmt: skip
    print("|---|---|---|---|---|")
    for name in direct:
        dep, _, ep = name.partition(": ")
        added = p50(name) - p50(direct[name])
        lo, hi = min(cpu[name]), max(cpu[name])
        print(f"| {dep} | {ep} | {p50(name):.3f} | {added:.3f} | {cpu50(name):.3f} "
              f"({lo:.3f}-{hi:.3f}) |")  # fmt: skip
    for dep in ("openai", "anthropic"):
        resp, chat = f"{dep}: responses", f"{dep}: chat"
        d_added = (p50(resp) - p50(direct[resp])) - (p50(chat) - p50(direct[chat]))
        per_round = [a - b for a, b in zip(cpu[resp], cpu[chat], strict=True)]
        print(f"\n{dep}: Responses minus chat: added p50 {d_added:+.3f} ms; server CPU "
              f"{percentile(per_round, 50):+.3f} ms/request (rounds: "
              f"{', '.join(f'{x:+.3f}' for x in per_round)})")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
