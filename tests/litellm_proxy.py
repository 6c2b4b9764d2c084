"""What the tests of LiteLLM's management endpoints share: a proxy on a LiteLLM-style config
over the simulated upstream (``litellm_proxy``), one admin request as a LiteLLM admin script
makes it (``call``, ``ok``), and the openai SDK as the client a key governs (``client``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import openai

import proxy_clients
from routeguard.gateway import Gateway
from routeguard.mock import MockServer
from routeguard.server import create_app
from routeguard.server.thread import ServerThread


@contextmanager
def litellm_proxy(
    master: str,
    aliases: tuple[str, ...] = ("a", "b"),
    settings: dict[str, Any] | None = None,
    **params: Any,
) -> Iterator[ServerThread]:
    """A proxy serving ``aliases`` (``openai/<alias>`` on a simulated upstream, with
    ``params`` added to each deployment's ``litellm_params``) behind ``master``;
    ``settings`` are more top-level config sections."""
    with MockServer() as mock:
        oa = {"api_base": mock.url + "/v1", "api_key": "k", **params}
        gw = Gateway.from_config({
            "model_list": [{"model_name": n, "litellm_params": {"model": f"openai/{n}", **oa}}
                           for n in aliases],
            "general_settings": {"master_key": master},
            **(settings or {}),
        })  # fmt: skip
        try:
            with ServerThread(create_app(gw)) as s:
                yield s
        finally:
            gw.keys.close()


def call(base: str, method: str, path: str, body: Any = None, *, key: str) -> tuple[int, Any]:
    """One admin request authenticated by ``key``; returns (status, JSON)."""
    return proxy_clients.call(base + path, body=body, key=key, method=method)


def ok(base: str, method: str, path: str, body: Any = None, *, key: str) -> Any:
    """An admin request that must succeed; its JSON."""
    status, out = call(base, method, path, body, key=key)
    assert status == 200, out
    return out


def client(base: str, key: str) -> openai.OpenAI:
    """The openai SDK on the proxy with ``key``, never retrying (a refusal is seen once)."""
    return openai.OpenAI(base_url=base + "/v1", api_key=key, max_retries=0)
