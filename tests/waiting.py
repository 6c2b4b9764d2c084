"""Waiting in tests for something another instance does asynchronously (a Redis stream)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from routeguard.errors import AuthenticationError


def eventually(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    """``check()``'s result once it stops raising AuthenticationError/AssertionError."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except (AuthenticationError, AssertionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def assert_revoked(store: Any, token: str) -> None:
    """``store`` refuses ``token`` because its key was revoked (AssertionError otherwise)."""
    try:
        store.authenticate(token)
    except AuthenticationError as exc:
        assert "revoked" in str(exc)
        return
    raise AssertionError("the revoked key is still accepted")
