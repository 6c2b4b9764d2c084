"""Header field names checked as RFC 9110 tokens, one check for the upstream client's
request headers and the server protocol's response headers (str and bytes alike)."""

from __future__ import annotations

import asyncio

import pytest

from routeguard.errors import ProviderError
from routeguard.http_tokens import is_token
from routeguard.providers import http

VALID = ["x-request-id", "Content-Type", "a", "!#$%&'*+-.^_`|~09AZaz"]
INVALID = ["", "x y", "x:y", "x\r\ny", "x\0", "(x)", "x/y", 'x"y', "x{y}", "\u00e9t\u00e9", "x\x7f"]


@pytest.mark.parametrize("name", VALID)
def test_tokens_pass_as_str_and_as_bytes(name: str) -> None:
    assert is_token(name)
    assert is_token(name.encode())
    assert is_token(name)  # and again, once remembered


@pytest.mark.parametrize("name", INVALID)
def test_non_tokens_fail_as_str_and_as_bytes(name: str) -> None:
    assert not is_token(name)
    assert not is_token(name.encode("utf-8", "surrogatepass"))


def test_the_upstream_client_refuses_a_request_header_name_that_is_no_token() -> None:
    async def call() -> None:
        await http.post_json("http://127.0.0.1:9/v1/x", {"x y": "1"}, {}, 5)

    with pytest.raises(ProviderError, match="cannot be sent: invalid header name") as info:
        asyncio.run(call())  # refused before any connection is tried
    assert info.value.health is False  # the request's fault, not the upstream's
