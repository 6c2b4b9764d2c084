"""The parent of ``serve --workers N``: uvicorn's worker supervisor, with a SIGHUP that
checks the config file before it replaces any worker.

uvicorn answers SIGHUP with a rolling restart: one worker at a time, a new one starts and,
once ready, the old one is sent SIGTERM and drains (:mod:`routeguard.server.lifecycle`).
Here the file is first read, loaded and compared with the running config
(:func:`routeguard.reload.compare`): a file that would fail, or a change a reload cannot make,
is logged with every problem and no worker is touched. Otherwise its data becomes the
:class:`ConfigSnapshot` every worker starts from, so a worker (re)started later never reads a
file saved half-edited since. A worker's ``POST /admin/reload`` sends its parent this SIGHUP.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import tempfile
from collections.abc import Mapping
from typing import Any

from uvicorn import Config as UvicornConfig
from uvicorn.supervisors.multiprocess import Multiprocess

from routeguard import config as config_mod
from routeguard.errors import ConfigError
from routeguard.reload import compare

log = logging.getLogger("routeguard.server")


class ConfigSnapshot:
    """The checked config data workers start from: a private JSON file (mode 0600: the data
    may hold keys as the config file does), replaced atomically, removed at exit."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        fd, self.path = tempfile.mkstemp(prefix="routeguard-config-", suffix=".json")
        os.close(fd)
        self.write(data)

    def write(self, data: Mapping[str, Any]) -> None:
        """Replace the snapshot with ``data`` (a reader sees the old or the new, whole)."""
        tmp = self.path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, default=str)  # YAML dates and the like: as text
        os.replace(tmp, self.path)

    def remove(self) -> None:
        """Delete the snapshot file."""
        for p in (self.path, self.path + ".tmp"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(p)


class Supervisor(Multiprocess):
    """uvicorn's :class:`Multiprocess` whose SIGHUP restarts workers only on a good config."""

    def __init__(
        self,
        config: UvicornConfig,
        sockets: list[socket.socket],
        *,
        snapshot: ConfigSnapshot | None,
        running: config_mod.Config,
    ) -> None:
        super().__init__(config, sockets)
        self._snapshot = snapshot
        self._running = running

    def handle_hup(self) -> None:
        """Check the file, then replace the workers one by one (or log why not)."""
        source = self._running.source
        if self._snapshot is None:
            log.warning("SIGHUP: the proxy was started without --config; nothing to reload")
            return
        try:
            data = config_mod.read_file(source)
            new = config_mod.load(data, origin=source)
            problems, restart = compare(self._running, new)
            if problems:
                raise ConfigError(problems, source=source)
        except ConfigError as exc:
            log.error("reload refused, the workers keep the running config: %s", exc.message)
            return
        log.warning(
            "SIGHUP: restarting %d workers one by one on %s%s",
            len(self.processes),
            source,
            f" (a full restart is needed for: {', '.join(restart)})" if restart else "",
        )
        self._snapshot.write(data)
        self._running = new
        super().handle_hup()
