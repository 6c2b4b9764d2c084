"""HTTP field names as RFC 9110 tokens: the one check the upstream client (the request
headers it sends) and the server protocol (the response headers an app sends) both make,
with the names already found valid remembered (a process sends the same few over and over)."""

from __future__ import annotations

_TCHAR = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_TCHAR_STR = frozenset(_TCHAR)
_TCHAR_BYTES = frozenset(_TCHAR.encode())
_KEEP = 4096  # names remembered at most: arbitrary names cannot grow the set without bound
_valid: set[str | bytes] = set()


def is_token(name: str | bytes) -> bool:
    """Whether ``name`` is a non-empty RFC 9110 token (a valid header field name)."""
    if name in _valid:
        return True
    chars = _TCHAR_STR if isinstance(name, str) else _TCHAR_BYTES
    if not name or not chars.issuperset(name):
        return False
    if len(_valid) < _KEEP:
        _valid.add(name)
    return True
