"""A real Redis Cluster for the tests: three masters (and optionally replicas), from Debian's
binaries.

Each node is a ``redis-server`` child process with ``cluster-enabled yes``, its own port,
its own cluster-bus port (``cluster-port``, Redis 7) and its own temporary directory (where
``nodes.conf`` keeps its identity across a restart); persistence is off. ``redis-cli
--cluster create`` assigns the 16,384 slots over the three masters, then :meth:`start`
waits until every node reports ``cluster_state:ok``. Used by the ``redis_cluster`` fixture
in ``conftest.py``; a test may :meth:`stop_node` / :meth:`start_node` one master.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from ports import free_port


def _ask(port: int, *command: str, timeout: float = 0.5) -> str:
    """One command over a raw socket (RESP), the whole reply as text."""
    payload = f"*{len(command)}\r\n" + "".join(f"${len(c)}\r\n{c}\r\n" for c in command)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(payload.encode())
        data = sock.recv(65536)
        if data.startswith(b"$"):  # a bulk string: read all of its announced length
            head, _, _ = data.partition(b"\r\n")
            want = len(head) + 2 + int(head[1:]) + 2
            while len(data) < want:
                more = sock.recv(65536)
                if not more:
                    break
                data += more
        return data.decode(errors="replace")


class NodeExited(RuntimeError):
    """A node's process ended during start-up (typically: its port was taken)."""


class ClusterNodes:
    """Three cluster-enabled ``redis-server`` processes joined into one Redis Cluster."""

    def __init__(
        self, server: str, cli: str, workdir: Path, masters: int = 3, replicas: int = 0
    ) -> None:
        self.server = server
        self.cli = cli
        self.replicas = replicas
        count = masters * (1 + replicas)
        self.ports = [free_port() for _ in range(count)]
        self.bus_ports = [free_port() for _ in range(count)]
        self.dirs = [workdir / f"node-{i}" for i in range(count)]
        self._procs: list[subprocess.Popen[bytes] | None] = [None] * count

    @property
    def seeds(self) -> list[str]:
        """``host:port`` of every node."""
        return [f"127.0.0.1:{p}" for p in self.ports]

    @property
    def url(self) -> str:
        """The routeguard cluster URL naming every node as a seed."""
        return "redis+cluster://" + ",".join(self.seeds)

    def start_node(self, i: int, timeout: float = 10.0) -> None:
        """Start (or restart) node ``i`` and wait until it answers PING."""
        self.dirs[i].mkdir(parents=True, exist_ok=True)
        args = [self.server, "--port", str(self.ports[i]), "--bind", "127.0.0.1"]
        args += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
        args += ["--cluster-port", str(self.bus_ports[i]), "--cluster-node-timeout", "1000"]
        args += ["--save", "", "--appendonly", "no", "--dir", str(self.dirs[i])]
        proc = subprocess.Popen(
            args, cwd=self.dirs[i], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self._procs[i] = proc
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise NodeExited(f"cluster node {i} exited with {proc.returncode}")
            try:
                if _ask(self.ports[i], "PING").startswith("+PONG"):
                    return
            except OSError:
                pass
            time.sleep(0.02)
        raise RuntimeError(f"cluster node {i} did not answer on port {self.ports[i]}")

    def kill_node(self, i: int) -> None:
        """SIGKILL node ``i``: no shutdown, as a crashed machine."""
        proc = self._procs[i]
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        self._procs[i] = None

    def info(self, i: int, section: str) -> dict[str, str]:
        """``INFO <section>`` of node ``i`` as a dict."""
        out = {}
        for line in _ask(self.ports[i], "INFO", section).splitlines():
            if ":" in line and not line.startswith("#"):
                k, v = line.split(":", 1)
                out[k] = v.strip()
        return out

    def stop_node(self, i: int) -> None:
        """Stop node ``i`` (its data is gone: persistence is off)."""
        proc = self._procs[i]
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._procs[i] = None

    def state(self, i: int) -> str:
        """``cluster_state`` as node ``i`` sees it (``ok`` or ``fail``)."""
        for line in _ask(self.ports[i], "CLUSTER", "INFO").splitlines():
            if line.startswith("cluster_state:"):
                return line.split(":", 1)[1].strip()
        return "unknown"

    def wait_state(self, want: str, nodes: list[int] | None = None, timeout: float = 30.0) -> None:
        """Wait until every node of ``nodes`` (default: all) reports ``cluster_state:want``."""
        deadline = time.monotonic() + timeout
        nodes = list(range(len(self.ports))) if nodes is None else nodes
        while True:
            try:
                if all(self.state(i) == want for i in nodes):
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the cluster did not reach cluster_state:{want}")
            time.sleep(0.05)

    def wait_replicas_online(self, timeout: float = 30.0) -> None:
        """Wait until every master reports all its replicas synced (``state=online``)."""
        deadline = time.monotonic() + timeout
        while True:
            masters = [self.info(i, "replication") for i in range(len(self.ports))]
            masters = [m for m in masters if m.get("role") == "master"]
            links = [v for m in masters for k, v in m.items() if k.startswith("slave")]
            if len(links) == len(masters) * self.replicas and all(
                "state=online" in v for v in links
            ):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"replicas did not come online: {links}")
            time.sleep(0.05)

    def start(self, attempts: int = 3) -> None:
        """Start every node, assign the slots, and wait for ``cluster_state:ok``.

        A node that exits at once lost its port to another process between the choice and
        the bind: every port is drawn anew and the nodes started again, up to ``attempts``.
        """
        for attempt in range(attempts):
            try:
                for i in range(len(self.ports)):
                    self.start_node(i)
                break
            except NodeExited:
                self.stop()
                if attempt == attempts - 1:
                    raise
                for d in self.dirs:  # a fresh identity (nodes.conf) for the new ports
                    shutil.rmtree(d, ignore_errors=True)
                self.ports = [free_port() for _ in self.ports]
                self.bus_ports = [free_port() for _ in self.ports]
        try:
            create = [self.cli, "--cluster", "create", *self.seeds]
            subprocess.run(
                [*create, "--cluster-replicas", str(self.replicas), "--cluster-yes"],
                check=True,
                capture_output=True,
                timeout=60,
            )
            self.wait_state("ok")
            if self.replicas:
                self.wait_replicas_online()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop every node."""
        for i in range(len(self.ports)):
            self.stop_node(i)
