"""Errors from the native core arrive as exceptions of routeguard's hierarchy (and of the
built-in kind callers may already catch), converted in one place in Rust."""

from __future__ import annotations

import numpy as np
import pytest

from routeguard import RouteguardError
from routeguard._native import core
from routeguard.errors import CoreInputError, CoreNotFound


def test_bad_input_is_a_core_input_error() -> None:
    a, b = np.ones(3, dtype=np.float32), np.ones(4, dtype=np.float32)
    with pytest.raises(CoreInputError) as info:
        core.cosine(a, b)
    assert isinstance(info.value, ValueError) and isinstance(info.value, RouteguardError)
    assert "3" in str(info.value) and "4" in str(info.value)  # says what did not match


def test_a_missing_key_is_core_not_found() -> None:
    ledger = core.Ledger()
    with pytest.raises(CoreNotFound) as info:
        ledger.spent(12345, 0)
    assert isinstance(info.value, KeyError) and isinstance(info.value, RouteguardError)
    assert str(info.value) == "budget account 12345"  # not KeyError's quoted repr


def test_existing_handlers_still_catch_them() -> None:
    with pytest.raises(ValueError):
        core.cosine(np.ones(2, dtype=np.float32), np.ones(5, dtype=np.float32))
    with pytest.raises(KeyError):
        core.Ledger().calendar(99)
