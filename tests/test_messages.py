"""One rule for a message's text, shared by the cache, the router and ``analyze``."""

from __future__ import annotations

from typing import Any

import pytest

from routeguard.analyze.logs import _last_user_text
from routeguard.messages import content_text
from routeguard.routing.router import prompt_text

IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}


@pytest.mark.parametrize(
    ("content", "text", "text_only"),
    [
        ("plain", "plain", "plain"),
        ([{"type": "text", "text": "a"}, {"type": "input_text", "text": "b"}], "a\nb", "a\nb"),
        ([{"type": "text", "text": "look"}, IMAGE], "look", None),
        ([], "", ""),
        (None, None, None),
        ({"type": "text", "text": "not a list"}, None, None),
        (b"bytes", None, None),
    ],
)
def test_content_text(content: Any, text: str | None, text_only: str | None) -> None:
    assert content_text(content) == text
    assert content_text(content, text_only=True) == text_only


def test_the_layers_agree_on_a_text_prompt() -> None:
    parts = [{"type": "text", "text": "hi"}, {"type": "text", "text": "there"}]
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": parts}]
    assert prompt_text({"messages": messages}) == _last_user_text(messages) == "hi\nthere"
    with_image = [{"role": "user", "content": [{"type": "text", "text": "what is it"}, IMAGE]}]
    assert prompt_text({"messages": with_image}) == "what is it"  # the router reads the text
    assert _last_user_text(with_image) is None  # the cache does not key on it
