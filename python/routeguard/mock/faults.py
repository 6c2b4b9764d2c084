"""The one exception the simulated upstream raises for every answer that is an error.

Request parsing, authentication, injected failures and context-window checks all raise a
:class:`Fault`; the ASGI app catches it and asks the wire format of the endpoint (OpenAI,
Anthropic or Gemini) to render it as that provider's real error body, headers and status.
A fault without a message gets the format's stock message for its status.
"""

from __future__ import annotations

MIDSTREAM = "midstream-error"


def midstream_message(text: str) -> str:
    """A simulated mid-stream failure's message: the format's own words, then the note
    every stream plan's error frame carries, naming the behaviour token."""
    return f"{text} (simulated by routeguard mock upstream: {MIDSTREAM})"


class Fault(Exception):
    """An error answer: HTTP status plus what the wire formats need to render it."""

    def __init__(
        self,
        status: int,
        message: str | None = None,
        *,
        param: str | None = None,
        code: str | None = None,
        injected: str | None = None,
    ) -> None:
        super().__init__(message or f"status {status}")
        self.status = status
        self.message = message
        self.param = param
        # OpenAI's ``error.code`` (``context_length_exceeded``, ``invalid_api_key``...).
        self.code = code
        # The behaviour token that caused it (``error-429``), appended to stock messages so a
        # developer reading a demo log knows the failure was asked for.
        self.injected = injected
        # ``echo-headers``: the request's headers, appended to the message as a careless
        # upstream (or a proxy in front of it) does.
        self.echo: str | None = None

    def hint(self) -> str:
        """The suffix naming the behaviour token that injected this fault ("" if none), and
        the echoed request headers under ``echo-headers``."""
        out = f" (simulated by routeguard mock upstream: {self.injected})" if self.injected else ""
        return out + (f" [request headers: {self.echo}]" if self.echo else "")
