"""What OpenTelemetry tracing costs a request, in one run on the same machine:

1. the hooks alone, in process: CPU per request of the SERVER span, one CLIENT attempt span
   (with ``traceparent`` injection) and closing both with their attributes, split into what
   runs before the response leaves and after it; and the OTLP encoding of one span, which
   the SDK's export thread does off the event loop (routeguard's wire encoder, which the
   proxy uses, and the SDK's, for comparison);
2. end to end: four single-worker proxies on the same LiteLLM-format config, tracing off,
   on (every request, or ``--sample-ratio`` of them, to a local OTLP sink), and a second of
   each as A/A controls, driven
   sequentially (concurrency 1) in alternating rounds (each starting at another proxy): p50
   latency, pooled and as the median over rounds of each round's difference (which drift in
   the machine's load blurs less), and CPU per request of each proxy process (all its
   threads, from /proc) and of its event loop's thread alone.

    .venv/bin/python benches/bench_tracing.py [--requests 400] [--rounds 8]

Needs the ``otel`` extra. Not part of ``make test``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind

from routeguard.bench import proxy
from routeguard.bench.report import cpu_model
from routeguard.bench.timing import percentile
from routeguard.config.settings import OtlpTarget, TracingConfig
from routeguard.deployment import Deployment
from routeguard.observe.requestlog import Trace
from routeguard.result import ChatResult
from routeguard.server import otlp_wire
from routeguard.server.tracing import Tracing


class _Keep(SpanExporter):
    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def export(self, spans: Any) -> SpanExportResult:
        self.spans.extend(spans[: max(0, 1024 - len(self.spans))])
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


def hooks(n: int) -> dict[str, float]:
    """CPU µs per request of the tracing hooks (this thread's: the event loop's share; the
    export thread builds the request span's attributes), and of encoding one span."""
    keep = _Keep()
    t = Tracing(TracingConfig((OtlpTarget("http://127.0.0.1:9/v1/traces"),)), exporters=[keep])
    dep = Deployment("d1", "bench", "openai", "sim-bench", "http://127.0.0.1:4001/v1", None)
    request = {"model": "bench", "messages": [{"role": "user", "content": "hi"}],
               "max_tokens": 16}  # fmt: skip
    usage = {"prompt_tokens": 9, "completion_tokens": 12}
    response = {"id": "chatcmpl-1", "model": "sim-bench", "usage": usage,
                "choices": [{"finish_reason": "stop", "message": {"content": "x"}}]}  # fmt: skip
    headers = [(b"content-type", b"application/json"), (b"authorization", b"Bearer x")]
    before = after = 0.0
    for i in range(n + 500):
        if i == 500:  # warmed up
            before = after = 0.0
        trace = Trace("req_1", time.time(), time.perf_counter())
        c0 = time.thread_time()
        span = t.begin("POST", "/v1/chat/completions", headers, True)
        attempt = t.attempt_begin("bench", dep)
        t.inject({"content-type": "application/json"})
        t.attempt_end(attempt, None, False, response)
        c1 = time.thread_time()
        trace.request = request
        trace.result = ChatResult("bench", dep, 1, 0.0003, trace.started, response=response,
                                  usage=usage)  # fmt: skip
        span.status = 200
        c2 = time.thread_time()
        t.end(span, trace, True)
        c3 = time.thread_time()
        before += c1 - c0
        after += c3 - c2
    t.provider.force_flush()
    spans = keep.spans
    t.shutdown()
    out = {"before_response_us": before / n * 1e6, "after_response_us": after / n * 1e6}
    # The request span's attributes, built when the exporter first reads them.
    server = [s for s in spans if s.kind is SpanKind.SERVER]
    c0 = time.process_time()
    for s in server:
        _ = s.attributes
    out["deferred_us"] = (time.process_time() - c0) / max(1, len(server)) * 1e6
    for name, encoder in (("sdk", lambda b: encode_spans(b).SerializeToString()),
                          ("wire", otlp_wire.encode)):  # fmt: skip
        c0 = time.process_time()
        for _ in range(5):
            for i in range(0, len(spans), 512):
                encoder(spans[i : i + 512])
        out[f"encode_{name}_us"] = (time.process_time() - c0) / (5 * max(1, len(spans))) * 1e6
    return out


def end_to_end(requests: int, rounds: int, ratio: float) -> dict[str, dict[str, float]]:
    """p50 ms and CPU µs per request of each proxy, over alternating rounds."""
    names = ["off", "on", "off (A/A)", "on (A/A)"]
    procs = []
    tmp = Path(tempfile.mkdtemp(prefix="rg-bench-tracing-"))
    try:
        ports = {n: proxy.free_port() for n in ["sink", *names]}
        mock, mock_url = proxy.start_upstream()
        procs.append(mock)
        sink_url = f"http://127.0.0.1:{ports['sink']}"
        sink = proxy.start([sys.executable, "-m", "routeguard.bench.otlp_sink",
                            "--port", str(ports["sink"])])  # fmt: skip
        procs.append(sink)
        proxy.wait_ready(sink_url + "/health", sink)
        servers = {}
        for i, name in enumerate(names):
            cfg = tmp / f"config{i}.yaml"
            if name.startswith("on"):
                proxy.tracing_config(cfg, mock_url, sink_url, ratio)
            else:
                proxy.write_config(cfg, mock_url)
            p = proxy.start([*proxy.ROUTEGUARD, "serve", "--config", str(cfg),
                             "--port", str(ports[name]), "--log-level", "error"])  # fmt: skip
            procs.append(p)
            proxy.wait_ready(f"http://127.0.0.1:{ports[name]}/health", p)
            servers[name] = p
        latencies: dict[str, list[float]] = {n: [] for n in names}
        round_p50: dict[str, list[float]] = {n: [] for n in names}
        cpu: dict[str, list[float]] = {n: [] for n in names}
        loop: dict[str, list[float]] = {n: [] for n in names}
        for i in range(rounds):
            for name in names[i % len(names) :] + names[: i % len(names)]:
                url = f"http://127.0.0.1:{ports[name]}/v1/chat/completions"
                pid = servers[name].pid
                c0, m0 = proxy.process_cpu_s(pid), proxy.process_cpu_s(pid, pid)
                res = asyncio.run(proxy.drive(name, url, 1, requests, proxy.MASTER_KEY))
                latencies[name] += res.latencies
                round_p50[name].append(res.p50)  # ms
                # warm-up requests included; the export of spans lands in later rounds
                cpu[name].append((proxy.process_cpu_s(pid) - c0) / (requests + 50) * 1e6)
                loop[name].append((proxy.process_cpu_s(pid, pid) - m0) / (requests + 50) * 1e6)
        return {
            n: {
                "p50_ms": percentile(latencies[n], 50) * 1000,
                "round_p50_ms": round_p50[n],
                "cpu_us_per_request": sum(cpu[n]) / len(cpu[n]),
                "loop_us_per_request": sum(loop[n]) / len(loop[n]),
            }
            for n in names
        }
    finally:
        for p in reversed(procs):
            proxy.stop(p)


def main() -> int:
    """Print both parts and the differences."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=400, help="requests per proxy per round")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--hook-requests", type=int, default=20000)
    ap.add_argument("--sample-ratio", type=float, default=1.0, help="share of requests traced")
    args = ap.parse_args()
    print(f"CPU: {cpu_model()}; load average {os.getloadavg()[0]:.1f}", flush=True)
    h = hooks(args.hook_requests)
    print("hooks, CPU µs per request: before the response leaves "
          f"{h['before_response_us']:.1f}, after it {h['after_response_us']:.1f}; the "
          f"request span's attributes, built in the export thread {h['deferred_us']:.1f}; "
          "OTLP encoding (export thread) per span (2 a plain request): routeguard's wire "
          f"encoder {h['encode_wire_us']:.1f} µs, "
          f"the SDK's {h['encode_sdk_us']:.1f} µs")  # fmt: skip
    e = end_to_end(args.requests, args.rounds, args.sample_ratio)
    print(f"tracing on: sample_ratio {args.sample_ratio}")
    print("| proxy | p50 ms | CPU µs per request | event-loop thread |\n|---|---|---|---|")
    for name, r in e.items():
        print(f"| {name} | {r['p50_ms']:.3f} | {r['cpu_us_per_request']:.0f} "
              f"| {r['loop_us_per_request']:.0f} |")  # fmt: skip

    def both(mode: str, key: str) -> float:
        return (e[mode][key] + e[f"{mode} (A/A)"][key]) / 2

    added = (both("on", "p50_ms") - both("off", "p50_ms")) * 1000
    spread = abs(e["off"]["p50_ms"] - e["off (A/A)"]["p50_ms"]) * 1000
    cpu = both("on", "cpu_us_per_request") - both("off", "cpu_us_per_request")
    loop = both("on", "loop_us_per_request") - both("off", "loop_us_per_request")
    rounds = [
        ((on + on2) - (off + off2)) / 2 * 1000
        for on, on2, off, off2 in zip(*(e[n]["round_p50_ms"] for n in
                                        ("on", "on (A/A)", "off", "off (A/A)")), strict=True)
    ]  # fmt: skip
    print(f"p50 added by tracing: {added:+.0f} µs pooled, {statistics.median(rounds):+.0f} µs "
          f"median of rounds (A/A spread of off: {spread:.0f} µs); CPU added: {cpu:+.0f} µs "
          f"per request, {loop:+.0f} µs of it on the event loop's thread")  # fmt: skip
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
