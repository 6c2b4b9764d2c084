"""The parent of ``serve --workers N``: uvicorn's worker supervisor, with a SIGHUP that
checks the config file before it replaces any worker.

uvicorn answers SIGHUP with a rolling restart: one worker at a time, a new one starts (on the
file as it is now) and, once ready, the old one is sent SIGTERM and drains
(:mod:`routeguard.server.lifecycle`). Here the file is first loaded and compared with the
running config (:func:`routeguard.reload.compare`): a file that would fail, or a change a
reload cannot make, is logged with every problem and no worker is touched. A worker's
``POST /admin/reload`` sends its parent this same SIGHUP.
"""

from __future__ import annotations

import logging
import socket

from uvicorn import Config as UvicornConfig
from uvicorn.supervisors.multiprocess import Multiprocess

from routeguard import config as config_mod
from routeguard.errors import ConfigError
from routeguard.reload import compare

log = logging.getLogger("routeguard.server")


class Supervisor(Multiprocess):
    """uvicorn's :class:`Multiprocess` whose SIGHUP restarts workers only on a good config."""

    def __init__(
        self,
        config: UvicornConfig,
        sockets: list[socket.socket],
        *,
        source: str | None,
        running: config_mod.Config,
    ) -> None:
        super().__init__(config, sockets)
        self._source = source
        self._running = running

    def handle_hup(self) -> None:
        """Check the file, then replace the workers one by one (or log why not)."""
        if self._source is None:
            log.warning("SIGHUP: the proxy was started without --config; nothing to reload")
            return
        try:
            new = config_mod.load(self._source)
            problems, restart = compare(self._running, new)
            if problems:
                raise ConfigError(problems, source=self._source)
        except ConfigError as exc:
            log.error("reload refused, the workers keep the running config: %s", exc.message)
            return
        log.warning(
            "SIGHUP: restarting %d workers one by one on %s%s",
            len(self.processes),
            self._source,
            f" (a full restart is needed for: {', '.join(restart)})" if restart else "",
        )
        self._running = new
        super().handle_hup()
