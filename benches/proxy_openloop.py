"""Open-loop proxy throughput benchmark: the simulated upstream direct, through routeguard
(1 worker), and through LiteLLM's proxy (1 worker), at fixed request rates, in one run.

    .venv/bin/python benches/proxy_openloop.py [--rates 250,500,1000] [--duration 20]
        [--warmup 3] [--repeats 1] [--client raw|aiohttp] [--skip-litellm]

Why open loop: a closed-loop client (N workers, each waiting for its answer before sending
the next) slows down when the server slows down, so queueing never shows in its latency.
Here every request has a scheduled send time ``t0 + i / rate`` on the monotonic clock and
is sent then whether or not earlier ones have answered; latency is measured from the
*scheduled* time to the end of the response body, so time spent waiting in any queue —
the server's, the connection pool's, or the generator's own when it falls behind — counts.
The generator's own lag (actual send minus scheduled) is reported separately: sends more
than ``--late-ms`` behind schedule are counted as late, which says how far the figures are
the generator's fault rather than the proxy's.

Data flow: start the simulated upstream (``routeguard mock-upstream``), routeguard
(``routeguard serve --workers 1``) and LiteLLM (``litellm[proxy]`` pinned in .bench/litellm,
1 worker, created on first use; see proxy_overhead.py) on free ports with one shared
LiteLLM-format config (cache off: no ``cache`` section) -> ``--repeats`` sweeps of: for
each rate, for each target: wait until the servers are idle, run ``--warmup`` seconds at the
rate (discarded), then ``--duration`` seconds measured, then wait for stragglers -> per run:
latency percentiles, achieved rate, errors and timeouts, generator lag, CPU used by the
target's processes, and CPU used by processes outside the bench ("other load": on a shared
machine that is the main source of noise) -> markdown table (medians over the sweeps) with
added latency (proxy minus direct, same rate, same sweep) and LiteLLM / routeguard ratios.
A target that falls behind (< 95% of the rate served, or timeouts) is not run at higher
rates (``--keep-going`` to run it anyway). Not part of ``make test``.

Keeping the generator cheap (it shares the 2 cores with the proxy and the upstream): one
uvloop event loop; by default a minimal HTTP/1.1 client (``RawClient``: one pre-encoded
request written to pooled keep-alive connections, responses framed by Content-Length, no
task or future per request, timeouts reaped every 100 ms), about half the CPU per request
of aiohttp (``--client aiohttp`` to cross-check with a general client).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import aiohttp
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))
from proxy_overhead import (  # sibling bench script, not a package
    BODY,
    MASTER_KEY,
    ROOT,
    ensure_litellm,
    free_port,
    start,
    stop,
    wait_ready,
    write_config,
)
from routeguard.bench.timing import percentile

CLK_TCK = os.sysconf("SC_CLK_TCK")


def pct(xs: list[float], q: float) -> float:
    """Percentile ``q`` (0..1) of ``xs``, in the list's unit (NaN when empty)."""
    return percentile(xs, q * 100)


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU seconds used so far by every live process in process group ``pgid``."""
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                raw = f.read()
        except OSError:
            continue
        # Fields after the ")" that closes the command name: state ppid pgrp ... utime stime.
        rest = raw[raw.rindex(b")") + 2 :].split()
        if int(rest[2]) == pgid:
            total += int(rest[11]) + int(rest[12])
    return total / CLK_TCK


@dataclass
class Run:
    """One target at one rate: raw measurements and the figures derived from them."""

    target: str
    rate: int
    duration: float
    latencies: list[float] = field(default_factory=list)  # seconds, scheduled -> body read
    lags: list[float] = field(default_factory=list)  # seconds, scheduled -> actually sent
    errors: int = 0
    timeouts: int = 0
    late: int = 0
    last_done: float = 0.0
    first_sched: float = 0.0
    target_cpu: float = 0.0
    other_load: float = 0.0
    gen_cpu: float = 0.0

    @property
    def achieved(self) -> float:
        """Successful responses per second over the measured window (first send -> last answer)."""
        span = self.last_done - self.first_sched
        return len(self.latencies) / span if span > 0 else 0.0

    def ms(self, q: float) -> float:
        """Latency percentile ``q`` (0..1, 1 = max) in milliseconds."""
        return pct(self.latencies, q) * 1000 if q < 1 else max(self.latencies or [0.0]) * 1000


class Recorder:
    """Collects one run's outcomes; the clients call it when a request ends."""

    def __init__(self, run: Run, late_s: float) -> None:
        """Record into ``run``; a send more than ``late_s`` behind schedule counts as late."""
        self.run = run
        self.late_s = late_s
        self.outstanding = 0

    def sent(self, sched: float, now: float) -> None:
        """A measured request left the generator at ``now`` (scheduled for ``sched``)."""
        lag = now - sched
        self.run.lags.append(lag)
        if lag > self.late_s:
            self.run.late += 1

    def done(self, sched: float, measured: bool, ok: bool | None, now: float) -> None:
        """A request ended: ``ok`` True (HTTP 200), False (error), None (timed out)."""
        self.outstanding -= 1
        if not measured:
            return
        run = self.run
        if ok:
            run.latencies.append(now - sched)
            if now > run.last_done:
                run.last_done = now
        elif ok is None:
            run.timeouts += 1
        else:
            run.errors += 1


class RawConn(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection carrying one request at a time (no pipelining)."""

    def __init__(self, client: RawClient) -> None:
        """Belong to ``client``, which hands out requests and takes the answers."""
        self.client = client
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.req: tuple[float, bool] | None = None  # (scheduled time, measured?)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport to write requests on."""
        # uvloop's TCPTransport quacks like asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        """Buffer until one whole response (Content-Length or chunked) is in, then report it."""
        buf = self.buf
        buf += data
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(buf[:end]).lower()
        i = head.find(b"\ncontent-length:")
        if i >= 0:
            j = head.find(b"\r", i + 1)
            total = end + 4 + int(head[i + 16 : j if j >= 0 else len(head)])
            if len(buf) < total:
                return
            del buf[:total]
        elif b"transfer-encoding: chunked" in head:
            if not buf.endswith(b"0\r\n\r\n"):
                return
            buf.clear()
        else:
            del buf[: end + 4]
        req, self.req = self.req, None
        if req is not None:
            self.client.finished(self, req, head[9:12] == b"200", b"connection: close" not in head)

    def connection_lost(self, exc: Exception | None) -> None:
        """A request still on this connection failed; the pool forgets the connection."""
        self.client.lost(self)


class RawClient:
    """A minimal HTTP/1.1 load client: pre-encoded request bytes written to pooled keep-alive
    connections, responses framed by Content-Length, no header parsing beyond that. Far
    cheaper per request than a general client, so the generator steals less CPU from the
    servers it measures. Requests beyond ``pool`` open connections wait in a FIFO (their
    latency, counted from the schedule, includes that wait)."""

    def __init__(self, url: str, rec: Recorder, pool: int, timeout: float) -> None:
        """Target ``url`` (http only), report to ``rec``."""
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "http" or parts.hostname is None:
            raise ValueError(f"raw client needs an http:// URL, got {url!r}")
        self.host, self.port = parts.hostname, parts.port or 80
        body = json.dumps(BODY).encode()
        self.request = (
            f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            f"Authorization: Bearer {MASTER_KEY}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        self.rec, self.pool, self.timeout = rec, pool, timeout
        self.idle: list[RawConn] = []
        self.busy: set[RawConn] = set()
        self.waiting: collections.deque[tuple[float, bool]] = collections.deque()
        self.n_open = 0
        self.loop = asyncio.get_running_loop()
        self.tasks: set[asyncio.Task[None]] = set()

    def send(self, sched: float, measured: bool) -> None:
        """Send one request now, on an idle connection, a new one, or queue it."""
        self.rec.outstanding += 1
        if self.idle:
            self._write(self.idle.pop(), (sched, measured))
        elif self.n_open < self.pool:
            self._open((sched, measured))
        else:
            self.waiting.append((sched, measured))

    def _write(self, conn: RawConn, req: tuple[float, bool]) -> None:
        conn.req = req
        self.busy.add(conn)
        assert conn.transport is not None
        conn.transport.write(self.request)

    def _open(self, req: tuple[float, bool]) -> None:
        self.n_open += 1
        t = self.loop.create_task(self._connect(req))
        self.tasks.add(t)
        t.add_done_callback(self.tasks.discard)

    async def _connect(self, req: tuple[float, bool]) -> None:
        try:
            _, conn = await self.loop.create_connection(lambda: RawConn(self), self.host, self.port)
        except OSError:
            self.n_open -= 1
            self.rec.done(req[0], req[1], False, time.monotonic())
            return
        self._write(conn, req)

    def finished(self, conn: RawConn, req: tuple[float, bool], ok: bool, keep: bool) -> None:
        """``conn`` delivered the answer to ``req``; reuse it for a waiting request or park it."""
        self.busy.discard(conn)
        self.rec.done(req[0], req[1], ok, time.monotonic())
        if not keep:
            assert conn.transport is not None
            conn.transport.close()
        elif self.waiting:
            self._write(conn, self.waiting.popleft())
        else:
            self.idle.append(conn)

    def lost(self, conn: RawConn) -> None:
        """``conn`` closed: fail its request, if any, and open a replacement for the queue."""
        self.n_open -= 1
        self.busy.discard(conn)
        if conn in self.idle:
            self.idle.remove(conn)
        if conn.req is not None:
            sched, measured = conn.req
            conn.req = None
            self.rec.done(sched, measured, False, time.monotonic())
        if self.waiting and self.n_open < self.pool:
            self._open(self.waiting.popleft())

    def reap(self, now: float) -> None:
        """Time out requests older than ``timeout`` (closing their connections)."""
        limit = now - self.timeout
        for conn in [c for c in self.busy if c.req is not None and c.req[0] < limit]:
            assert conn.req is not None
            sched, measured = conn.req
            conn.req = None
            self.busy.discard(conn)
            self.rec.done(sched, measured, None, now)
            assert conn.transport is not None
            conn.transport.abort()
        while self.waiting and self.waiting[0][0] < limit:
            sched, measured = self.waiting.popleft()
            self.rec.done(sched, measured, None, now)

    def close(self) -> None:
        """Close every connection."""
        for conn in [*self.idle, *self.busy]:
            if conn.transport is not None:
                conn.transport.abort()


async def drive(run: Run, url: str, args: argparse.Namespace) -> None:
    """Send ``rate`` requests per second on a fixed schedule for warmup + duration seconds."""
    rec = Recorder(run, args.late_ms / 1000)
    interval = 1.0 / run.rate
    n_warm = int(args.warmup * run.rate)
    n_total = n_warm + int(run.duration * run.rate)
    clock = time.monotonic
    loop = asyncio.get_running_loop()
    payload = json.dumps(BODY).encode()
    headers = {"authorization": f"Bearer {MASTER_KEY}", "content-type": "application/json"}
    session: aiohttp.ClientSession | None = None
    raw: RawClient | None = None
    pending: set[asyncio.Task[None]] = set()

    async def one(sched: float, measured: bool) -> None:
        assert session is not None
        if measured:
            rec.sent(sched, clock())  # the task's start: includes event-loop queueing
        try:
            async with session.post(url, data=payload, headers=headers) as r:
                await r.read()
                ok: bool | None = r.status == 200
        except TimeoutError:
            ok = None
        except aiohttp.ClientError:
            ok = False
        rec.done(sched, measured, ok, clock())

    if args.client == "aiohttp":
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=args.pool, limit_per_host=args.pool),
            timeout=aiohttp.ClientTimeout(total=args.timeout),
            skip_auto_headers=("User-Agent",),
        )
    else:
        raw = RawClient(url, rec, args.pool, args.timeout)
    try:
        # A few requests first, one at a time: keep-alive connections and lazy server setup.
        async with aiohttp.ClientSession() as warm:
            for _ in range(20):
                async with warm.post(url, data=payload, headers=headers) as r:
                    await r.read()
        cpu0 = time.process_time()
        t0 = clock() + 0.05
        next_reap = t0
        i = 0
        while i < n_total:
            now = clock()
            # Fire everything that is due; a burst here means the loop woke up late.
            while i < n_total:
                sched = t0 + i * interval
                if sched > now:
                    break
                measured = i >= n_warm
                if i == n_warm:
                    run.first_sched = sched
                    cpu0 = time.process_time()
                if raw is not None:
                    if measured:
                        rec.sent(sched, clock())
                    raw.send(sched, measured)
                else:
                    rec.outstanding += 1
                    t = loop.create_task(one(sched, measured))
                    pending.add(t)
                    t.add_done_callback(pending.discard)
                i += 1
            if raw is not None and now >= next_reap:
                raw.reap(now)
                next_reap = now + 0.1
            if i < n_total:
                # uvloop timers have 1 ms resolution: a shorter sleep returns at once and the
                # loop would spin, stealing a core from the servers. Sends due within the
                # millisecond go out together on the next wake-up (their lag is counted).
                await asyncio.sleep(max(0.001, t0 + i * interval - clock()))
        # Stragglers: wait for every answer (or its timeout).
        while rec.outstanding > 0:
            if raw is not None:
                raw.reap(clock())
            await asyncio.sleep(0.01)
        run.gen_cpu = time.process_time() - cpu0
    finally:
        if raw is not None:
            raw.close()
        if session is not None:
            await session.close()
    run.latencies.sort()
    run.lags.sort()


def busy_jiffies_seconds() -> float:
    """CPU seconds the whole machine has spent busy (all cores, all processes) since boot."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal ...: busy = all but idle and iowait.
    return (sum(v[:8]) - v[3] - v[4]) / CLK_TCK


def wait_quiet(pgids: list[int], limit: float = 120.0) -> None:
    """Wait until the servers are idle (a saturated proxy keeps draining its backlog after the
    client gave up), so one run's leftovers do not load the next one."""
    deadline = time.monotonic() + limit
    before = sum(group_cpu_seconds(g) for g in pgids)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = sum(group_cpu_seconds(g) for g in pgids)
        if now - before < 0.02:
            return
        before = now


def measure(
    name: str, url: str, pgid: int, all_pgids: list[int], rate: int, args: argparse.Namespace
) -> Run:
    """Run one target at one rate in a fresh event loop and return its measurements."""
    run = Run(name, rate, args.duration)
    cpu_before = group_cpu_seconds(pgid)
    ours_before = sum(group_cpu_seconds(g) for g in all_pgids) + time.process_time()
    busy_before, wall_before = busy_jiffies_seconds(), time.monotonic()
    uvloop.run(drive(run, url, args))
    # Includes the warm-up: CPU per request is computed over warm-up + measured requests.
    run.target_cpu = group_cpu_seconds(pgid) - cpu_before
    ours = sum(group_cpu_seconds(g) for g in all_pgids) + time.process_time() - ours_before
    wall = time.monotonic() - wall_before
    run.other_load = max(0.0, busy_jiffies_seconds() - busy_before - ours) / wall
    return run


def loadavg() -> str:
    """The 1/5/15-minute load averages, as ``uptime`` prints them."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> int:
    """Start the servers, run every target at every rate, print the table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rates", default="250,500,1000", help="requests per second, comma-separated")
    ap.add_argument("--duration", type=float, default=20.0, help="measured seconds per run")
    ap.add_argument("--warmup", type=float, default=3.0, help="discarded seconds before each run")
    ap.add_argument("--repeats", type=int, default=1, help="sweeps over all rates and targets")
    ap.add_argument("--timeout", type=float, default=10.0, help="per-request timeout, seconds")
    ap.add_argument("--late-ms", type=float, default=2.0, help="a send this late counts as late")
    ap.add_argument("--pool", type=int, default=1000, help="max client connections per target")
    ap.add_argument("--pause", type=float, default=1.0, help="idle seconds between runs")
    ap.add_argument("--skip-litellm", action="store_true")
    ap.add_argument(
        "--client",
        choices=("raw", "aiohttp"),
        default="raw",
        help="raw: minimal pooled HTTP/1.1 client (cheapest); aiohttp: general client",
    )
    ap.add_argument(
        "--keep-going",
        action="store_true",
        help="run a target at higher rates even after it failed to keep up at a lower one",
    )
    args = ap.parse_args()
    try:
        rates = [int(r) for r in args.rates.split(",")]
    except ValueError:
        ap.error(f"--rates must be comma-separated integers, got {args.rates!r}")
    if any(r <= 0 for r in rates) or args.duration <= 0 or args.warmup < 0 or args.repeats < 1:
        ap.error("rates, duration and repeats must be positive, warmup non-negative")
    exe = shutil.which("routeguard", path=str(ROOT / ".venv" / "bin")) or "routeguard"

    print(f"loadavg before: {loadavg()}  (cpus: {os.cpu_count()})", flush=True)
    procs: list[subprocess.Popen[bytes]] = []
    tmp = Path(tempfile.mkdtemp(prefix="rg-openloop-"))
    runs: dict[tuple[str, int], list[Run]] = {}
    try:
        mock_port, rg_port, ll_port = free_port(), free_port(), free_port()
        mock = start([exe, "mock-upstream", "--port", str(mock_port)])
        procs.append(mock)
        mock_url = f"http://127.0.0.1:{mock_port}"
        wait_ready(mock_url + "/health", mock)
        cfg = tmp / "config.yaml"
        write_config(cfg, mock_url)
        # target -> (url, process group whose CPU is charged to it; direct: the upstream's)
        targets = {"direct": (mock_url + "/v1/chat/completions", mock.pid)}
        rg = start(
            [
                *(exe, "serve", "--config", str(cfg), "--port", str(rg_port)),
                *("--workers", "1", "--log-level", "error"),
            ]
        )
        procs.append(rg)
        wait_ready(f"http://127.0.0.1:{rg_port}/health", rg)
        targets["routeguard"] = (f"http://127.0.0.1:{rg_port}/v1/chat/completions", rg.pid)
        if not args.skip_litellm:
            ll = start(
                [
                    *(str(ensure_litellm()), "--config", str(cfg), "--port", str(ll_port)),
                    *("--num_workers", "1"),
                ],
                env={"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"},
            )
            procs.append(ll)
            wait_ready(f"http://127.0.0.1:{ll_port}/health/liveliness", ll, timeout=300)
            targets["litellm"] = (f"http://127.0.0.1:{ll_port}/v1/chat/completions", ll.pid)
        pgids = [p.pid for p in procs]

        saturated: dict[str, int] = {}
        for rep in range(args.repeats):
            for rate in rates:
                for name, (url, pgid) in targets.items():
                    if name in saturated and not args.keep_going:
                        if rep == 0:
                            print(f"{name:>10} {rate:>5} rps  skipped: behind at {saturated[name]}")
                        continue
                    wait_quiet(pgids)
                    time.sleep(args.pause)
                    r = measure(name, url, pgid, pgids, rate, args)
                    runs.setdefault((name, rate), []).append(r)
                    n_sched = int(args.duration * rate)
                    print(
                        f"{name:>10} {rate:>5} rps #{rep + 1}  p50={r.ms(0.5):8.3f}  "
                        f"p90={r.ms(0.9):8.3f}  p99={r.ms(0.99):8.3f}  max={r.ms(1):9.3f} ms  "
                        f"got={r.achieved:7.1f}/s  err={r.errors} timeout={r.timeouts}  "
                        f"late={r.late}/{n_sched} (lag p99 {pct(r.lags, 0.99) * 1000:.2f} ms)  "
                        f"gen_cpu={r.gen_cpu:4.1f}s  target_cpu={r.target_cpu:5.1f}s  "
                        f"other_load={r.other_load:.2f} cores",
                        flush=True,
                    )
                    if r.achieved < 0.95 * rate or r.timeouts > 0:
                        saturated[name] = rate
    finally:
        for p in reversed(procs):
            stop(p)
        shutil.rmtree(tmp, ignore_errors=True)
        print(f"loadavg after: {loadavg()}", flush=True)
    report(runs, rates, args)
    return 0


def med(xs: list[float]) -> float:
    """Median of a non-empty list."""
    return percentile(xs, 50)


def report(
    runs: dict[tuple[str, int], list[Run]], rates: list[int], args: argparse.Namespace
) -> None:
    """Print the markdown table (added latency vs direct) and the LiteLLM / routeguard ratios."""
    reps = f"median of {args.repeats} runs, " if args.repeats > 1 else ""
    print(
        f"\nopen loop, {args.duration:g} s measured per run after {args.warmup:g} s warm-up, "
        f"{reps}latency in ms from scheduled send to last body byte (successful requests)\n"
    )
    print(
        "| target | rate/s | achieved/s | p50 | p90 | p99 | max | added p50 | added p99 "
        "| errors + timeouts | late sends | CPU ms/req | other load |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    added: dict[tuple[str, int], tuple[float, float]] = {}
    for rate in rates:
        ds = runs.get(("direct", rate), [])
        for name in ("direct", "routeguard", "litellm"):
            rs = runs.get((name, rate))
            if not rs:
                continue
            add50 = add99 = ""
            if ds and name != "direct":
                # Pair each proxy run with the direct run of the same sweep.
                a50 = [r.ms(0.5) - d.ms(0.5) for r, d in zip(rs, ds, strict=False)]
                a99 = [r.ms(0.99) - d.ms(0.99) for r, d in zip(rs, ds, strict=False)]
                added[(name, rate)] = (med(a50), med(a99))
                add50, add99 = f"{med(a50):.3f}", f"{med(a99):.3f}"
                if len(a99) > 1:
                    add99 += f" ({min(a99):.2f}..{max(a99):.2f})"
            n_sent = int((args.warmup + args.duration) * rate)
            cpu = med([r.target_cpu for r in rs]) / n_sent * 1000
            print(
                f"| {name} | {rate} | {med([r.achieved for r in rs]):.0f} "
                f"| {med([r.ms(0.5) for r in rs]):.3f} | {med([r.ms(0.9) for r in rs]):.3f} "
                f"| {med([r.ms(0.99) for r in rs]):.3f} | {max(r.ms(1) for r in rs):.3f} "
                f"| {add50} | {add99} | {sum(r.errors + r.timeouts for r in rs)} "
                f"| {sum(r.late for r in rs)} | {cpu:.3f} "
                f"| {max(r.other_load for r in rs):.2f} |"
            )
    print(
        "\nadded = proxy minus direct at the same rate; CPU ms/req = CPU of the target's "
        "processes (direct: the simulated upstream) over warm-up + measured requests; "
        "other load = cores busy with processes outside this bench during the run (max)."
    )
    for rate in rates:
        rg, ll = added.get(("routeguard", rate)), added.get(("litellm", rate))
        if rg is None or ll is None:
            continue
        llr = runs[("litellm", rate)]
        if any(r.achieved < 0.95 * rate or r.timeouts for r in llr):
            got = med([r.achieved for r in llr])
            print(
                f"{rate} rps: LiteLLM saturated (served {got:.0f}/s of {rate}/s, its latency is "
                f"queue growth and depends on --duration); routeguard added p50 {rg[0]:.3f} ms, "
                f"p99 {rg[1]:.3f} ms"
            )
            continue
        parts = []
        for label, r_, l_ in (("p50", rg[0], ll[0]), ("p99", rg[1], ll[1])):
            if r_ > 0.05:
                parts.append(f"added {label} LiteLLM/routeguard = {l_ / r_:.1f}x")
            else:
                parts.append(f"added {label}: LiteLLM {l_:.3f} ms, routeguard within noise")
        print(f"{rate} rps: " + "; ".join(parts))


if __name__ == "__main__":
    raise SystemExit(main())
