"""What the cloud providers add per request: SigV4 signing (botocore) for Bedrock, decoding
AWS event-stream messages (ours, against botocore's parser), and a chat round trip to the
simulated upstream for each wire format (OpenAI as the baseline).

    .venv/bin/python benches/bench_cloud.py [--n 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import time
from typing import Any

from botocore.eventstream import EventStreamBuffer

from routeguard.bench.timing import summarize, time_async
from routeguard.deployment import AwsSettings, AzureSettings, Deployment, Secret
from routeguard.mock import MockServer
from routeguard.mock.bedrock_wire import SIM_AWS_ACCESS_KEY_ID, SIM_AWS_SECRET_ACCESS_KEY, event
from routeguard.providers import aws, get_provider, http
from routeguard.providers.eventstream import EventStreamDecoder

URL = "https://bedrock-runtime.us-east-1.amazonaws.com/model/anthropic.claude%3A0/converse"
HELLO = {"messages": [{"role": "user", "content": "Hello"}]}


def _aws() -> AwsSettings:
    return AwsSettings(
        "us-east-1", Secret(SIM_AWS_ACCESS_KEY_ID), Secret(SIM_AWS_SECRET_ACCESS_KEY)
    )


async def signing(n: int) -> None:
    """Per-request cost of a SigV4 signature over a small Converse body."""
    body = b'{"messages":[{"role":"user","content":[{"text":"Hello"}]}]}'
    headers = {"content-type": "application/json"}
    await aws.sign(_aws(), URL, headers, body)  # credentials resolved once
    times = await time_async(lambda: aws.sign(_aws(), URL, headers, body), n, warmup=0)
    s = summarize(times).scaled(1e-3)
    print(f"  SigV4 signature (botocore)              p50 {s.p50:7.1f} us  p99 {s.p99:7.1f} us")


def decoding(messages: int = 4000, read: int = 1400) -> None:
    """Per-message cost of decoding a ConverseStream body read ``read`` bytes at a time."""
    delta = {"contentBlockIndex": 0, "delta": {"text": " word"}}
    data = b"".join(event("contentBlockDelta", delta) for _ in range(messages))
    reads = [data[i : i + read] for i in range(0, len(data), read)]
    t = time.perf_counter()
    ours = EventStreamDecoder()
    got = sum(len(ours.feed(r)) for r in reads)
    mine = (time.perf_counter() - t) / got * 1e6
    t = time.perf_counter()
    ref = EventStreamBuffer()
    count = 0
    for r in reads:
        ref.add_data(r)
        count += sum(1 for _ in ref)
    theirs = (time.perf_counter() - t) / count * 1e6
    label = "event-stream decode, per message"
    print(f"  {label:<40}ours {mine:5.2f} us  botocore {theirs:5.2f} us ({theirs / mine:.1f}x)")


async def round_trips(mock: MockServer, n: int) -> None:
    """p50/p99 of one non-streaming chat per wire format against the simulated upstream."""
    deps: dict[str, Any] = {
        "openai": Deployment("o", "o", "openai", "m", mock.url + "/v1", Secret("k")),
        "azure": Deployment("a", "a", "azure", "m", mock.url, Secret("k"),
                            azure=AzureSettings("2024-10-21")),
        "bedrock": Deployment("b", "b", "bedrock", "anthropic.m-v1:0", mock.url, None,
                              aws=_aws()),
    }  # fmt: skip
    base = None
    for kind, dep in deps.items():
        provider = get_provider(kind)
        call = functools.partial(provider.chat, HELLO, dep, 10.0)
        times = await time_async(call, n, warmup=50)
        s = summarize(times).scaled(1e-6)
        extra = "" if base is None else f"  (+{s.p50 - base:.3f} ms vs openai)"
        base = s.p50 if base is None else base
        print(f"  chat round trip, {kind:<22} p50 {s.p50:7.3f} ms  p99 {s.p99:7.3f} ms{extra}")
    await http.close_session()


def main() -> None:
    """Run the three measurements."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=2000)
    args = parser.parse_args()
    print("Cloud providers: per-request costs")
    asyncio.run(signing(args.n))
    decoding()
    with MockServer() as mock:
        asyncio.run(round_trips(mock, args.n // 4))


if __name__ == "__main__":
    main()
