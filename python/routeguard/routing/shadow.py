"""Shadow checks: outcome labels for the router without anyone clicking anything.

For a sampled share of the requests a route sent to its cheap alias (``routes.<alias>.shadow:
{share, judge}``), after the client has its answer: the same request goes to the strong alias
-> the judge alias reads the question and both answers (:func:`judge_request`, a fixed prompt;
answer A is always the cheap one, B the strong one) -> :func:`parse_verdict` reads "A", "B" or
"TIE" out of whatever it says -> the verdict is recorded as feedback for the request's id
(``strong_needed`` true when B, the strong answer, is better).

Everything runs in background tasks that never delay a client: at most ``max_concurrent``
checks per route are in flight and a sample beyond that is skipped (counted in
:attr:`Shadows.stats`), errors are logged and counted, never raised. The strong and judge calls
are charged to no budget account; their cost is counted in :attr:`Shadows.stats` and written on
each verdict (``shadow_cost_usd``). Streamed requests, requests with tools, answers without
text, and requests whose key may not use the strong or judge alias are not shadowed.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from routeguard.routing.outcomes import unit_hash
from routeguard.routing.router import prompt_text

log = logging.getLogger("routeguard.shadow")

Json = dict[str, Any]
Caller = Callable[[str, Json], Awaitable[tuple[Json, float]]]
Recorder = Callable[[str, str, str, float], None]  # request id, judge alias, verdict, cost

JUDGE_SYSTEM = (
    "You are a strict judge of answers to a user's request. Compare the two answers for "
    "correctness, completeness and helpfulness. Reply with exactly one word: A if answer A is "
    "better, B if answer B is better, TIE if they are about as good."
)
_MAX_TEXT = 8000  # characters of the question and of each answer shown to the judge

JudgeVerdict = Literal["A", "B", "TIE"]


def answer_text(response: Mapping[str, Any] | None) -> str | None:
    """The first choice's text of an OpenAI-shaped response (None: no text)."""
    if not isinstance(response, Mapping):
        return None
    choices = response.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
        return None
    msg = choices[0].get("message")
    content = msg.get("content") if isinstance(msg, Mapping) else None
    return content if isinstance(content, str) and content.strip() else None


def judge_request(judge: str, question: str, cheap: str, strong: str) -> Json:
    """The judge's request: the fixed instructions, the question and the two answers
    (A = the cheap answer, B = the strong one)."""
    user = (
        f"[Question]\n{question[:_MAX_TEXT]}\n\n[Answer A]\n{cheap[:_MAX_TEXT]}\n\n"
        f"[Answer B]\n{strong[:_MAX_TEXT]}\n\nWhich answer is better? Reply A, B or TIE."
    )
    return {
        "model": judge,
        "messages": [
            {"role": "system", "content": JUDGE_SYSTEM},
            {"role": "user", "content": user},
        ],
        "temperature": 0,
        "max_tokens": 16,
    }


_WORD = re.compile(r"[A-Za-z]+")
_FILLER = frozenset({"ANSWER", "VERDICT", "THE", "FINAL", "OPTION", "CHOICE", "RESPONSE"})
_SAYS: dict[str, JudgeVerdict] = {
    "A": "A",
    "B": "B",
    "TIE": "TIE",
    "TIED": "TIE",
    "EQUAL": "TIE",
    "SAME": "TIE",
    "BOTH": "TIE",
    "NEITHER": "TIE",
}


def parse_verdict(text: str | None) -> JudgeVerdict | None:
    """ "A", "B" or "TIE" out of a judge's reply: the first word after fillers (``"B"``,
    ``"**Answer B** is better"``, ``"Verdict: tie."``), else the only verdict it names
    (``"I think B"``); None when it names none, or several. A lower-case "a" is an article."""
    if not text:
        return None
    tokens = [t for t in _WORD.findall(text) if t != "a"]
    meaningful = [t for t in tokens if t.upper() not in _FILLER]
    if meaningful:
        first = _SAYS.get(meaningful[0].upper())
        if first is not None:
            return first
    found = {_SAYS[t.upper()] for t in tokens if t.upper() in _SAYS}
    return found.pop() if len(found) == 1 else None


@dataclass(slots=True)
class ShadowJob:
    """One sampled request to check: what was asked and what the cheap alias answered."""

    request_id: str
    route: str
    request: Json
    cheap_answer: str
    strong: str
    judge: str
    max_concurrent: int


@dataclass(slots=True)
class ShadowStats:
    """What shadow checks did so far (all routes)."""

    started: int = 0
    skipped_busy: int = 0  # sampled but max_concurrent checks were in flight
    failed: int = 0
    unparsed: int = 0  # the judge's reply named no verdict
    verdicts: dict[str, int] = field(default_factory=lambda: {"A": 0, "B": 0, "TIE": 0})
    calls: int = 0  # upstream calls made (strong + judge)
    cost_usd: float = 0.0  # their cost, charged to no account


def sampled(request_id: str, share: float) -> bool:
    """Whether ``request_id`` falls in the sampled ``share`` (by hash: reproducible)."""
    return share > 0 and unit_hash(request_id, "shadow") < share


def make_job(
    request_id: str, route: str, request: Mapping[str, Any], response: Json | None,
    strong: str, judge: str, max_concurrent: int,
) -> ShadowJob | None:  # fmt: skip
    """A job for this request, or None when it cannot be shadowed (a stream, tools, no text)."""
    if request.get("stream") or request.get("tools") or request.get("functions"):
        return None
    text = answer_text(response)
    if text is None or not prompt_text(request):
        return None
    return ShadowJob(request_id, route, dict(request), text, strong, judge, max_concurrent)


class Shadows:
    """Runs shadow checks in background tasks, a bounded number per route at a time."""

    def __init__(self, call: Caller, record: Recorder) -> None:
        self._call = call
        self._record = record
        self._inflight: dict[str, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.stats = ShadowStats()

    def start(self, job: ShadowJob) -> bool:
        """Start checking ``job`` in the background (False: the route's limit is reached)."""
        busy = self._inflight.get(job.route, 0)
        if busy >= job.max_concurrent:
            self.stats.skipped_busy += 1
            return False
        self._inflight[job.route] = busy + 1
        self.stats.started += 1
        task = asyncio.get_running_loop().create_task(self._run(job))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def drain(self, timeout: float | None = None) -> None:
        """Wait for the checks in flight (tests, shutdown); cancel those still running after
        ``timeout`` seconds."""
        tasks = list(self._tasks)
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        for t in pending:
            t.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    async def _run(self, job: ShadowJob) -> None:
        cost = 0.0
        try:
            request = {k: v for k, v in job.request.items() if k not in ("stream_options",)}
            request["model"] = job.strong
            strong_response, c = await self._call(job.strong, request)
            cost += c
            self.stats.calls += 1
            strong_text = answer_text(strong_response)
            if strong_text is None:
                self.stats.failed += 1
                log.warning("shadow %s: the strong answer has no text", job.request_id)
                return
            question = prompt_text(job.request)
            verdict_response, c = await self._call(
                job.judge, judge_request(job.judge, question, job.cheap_answer, strong_text)
            )
            cost += c
            self.stats.calls += 1
            verdict = parse_verdict(answer_text(verdict_response))
            if verdict is None:
                self.stats.unparsed += 1
                log.warning("shadow %s: the judge named no verdict", job.request_id)
                return
            self.stats.verdicts[verdict] += 1
            self._record(job.request_id, job.judge, verdict, cost)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a background check must never surface anywhere else
            self.stats.failed += 1
            log.warning("shadow %s failed: %s: %s", job.request_id, type(exc).__name__, exc)
        finally:
            self.stats.cost_usd += cost
            self._inflight[job.route] -= 1
