"""Free TCP ports for the servers the tests start, chosen outside the kernel's ephemeral range.

Asking the kernel for port 0 hands out a port from the ephemeral range, and once the probe
socket is closed that same port may be given to any outgoing connection before our server
binds it: the Redis Cluster nodes' bus links make such connections all the time, which is
how a node once failed to start in CI. Ports are drawn instead from below the ephemeral
range (``/proc/sys/net/ipv4/ip_local_port_range``), checked bindable, and never handed out
twice in one process.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

_GIVEN: set[int] = set()
_LOWEST = 20000


def _ephemeral_low() -> int:
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768
    return low if low > _LOWEST + 1000 else 32768


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now and outside the ephemeral range."""
    high = _ephemeral_low()
    for _ in range(1000):
        port = random.randrange(_LOWEST, high)
        if port in _GIVEN:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _GIVEN.add(port)
        return port
    raise RuntimeError(f"no free port in {_LOWEST}..{high}")
