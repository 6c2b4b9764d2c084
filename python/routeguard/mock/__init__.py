"""The bundled simulated provider ("mock upstream"): one ASGI server speaking the OpenAI,
Anthropic and Gemini wire formats, deterministic, with latency and failures on demand.

It is the upstream of the test suite, of ``make run`` without an API key and of the
benchmarks. Failure modes are asked for by model name or the ``x-mock-behaviour`` header
(``error-429``, ``slow-2000``, ``flaky-50``, ``midstream-error``, ``ctx-100``; exact rules in
:mod:`routeguard.mock.behaviour`); answers and token counts are described in
:mod:`routeguard.mock.answers`. With ``meanings`` (:mod:`routeguard.mock.meanings`) it answers
by meaning: every question of one cluster of paraphrases gets that cluster's answer.

    with MockServer() as m:
        client = OpenAI(base_url=m.url + "/v1", api_key="x")
"""

from __future__ import annotations

from routeguard.mock.app import BAD_KEY, MockApp, create_mock_app
from routeguard.mock.journal import RecordedRequest
from routeguard.mock.meanings import Meanings, load_meanings
from routeguard.mock.server import MockServer, serve_mock

__all__ = [
    "BAD_KEY",
    "Meanings",
    "MockApp",
    "MockServer",
    "RecordedRequest",
    "create_mock_app",
    "load_meanings",
    "serve_mock",
]
