"""Shared fixtures: a real ``redis-server`` for the tests of every Redis backend.

``redis_server`` (session-wide) yields a ``redis://`` URL of a throwaway server started on a
free port in a temporary directory with persistence off; tests isolate themselves with their
own key prefix. ``redis_process`` gives a test its own server it can stop and restart.
``redis_cluster`` (session-wide) is a real three-master Redis Cluster. ``mock`` is the
simulated upstream, one per test module (a module may still define its own). ``serve_config``
starts ``routeguard serve`` on a config (a dict, written to the test's directory), for
example with ``--workers 2``, and waits until it is ready. ``make`` and ``clock`` build the
budget backends on a fake clock (``budget_backends.py``; a module may define its own ``make``).
Without the binary the Redis tests are skipped, except under CI (``CI`` set), where a
missing binary is a failure: CI must install it (``apt-get install redis-server``).

Tests whose results depend on the vector and embedding kernels carry the ``simd`` mark
(``SIMD_SENSITIVE``); ``make simd-test`` reruns them at every instruction-set level the CPU
offers below its widest (``tests/simd_levels.py``).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
import redis

from budget_backends import clock, make  # noqa: F401 - the budget tests' fixtures
from cluster_nodes import ClusterNodes
from ports import free_port
from routeguard.mock import MockServer
from serving import Served, serve

# Modules whose outcomes go through the SIMD kernels (embedding, vector search, cache hits,
# semantic and learned routing): rerun at each ROUTEGUARD_SIMD level by `make simd-test`.
SIMD_SENSITIVE = frozenset(
    {
        "test_analyze.py",
        "test_cache_admin.py",
        "test_cache_admin_proxy.py",
        "test_cache_ann.py",
        "test_cache_redis.py",
        "test_cache_snapshot.py",
        "test_cache_verify.py",
        "test_embed.py",
        "test_embed_precision.py",
        "test_gateway_cache.py",
        "test_gateway_cache_redis.py",
        "test_gateway_routing.py",
        "test_learning_from_traffic.py",
        "test_routing.py",
        "test_semantic_cache.py",
        "test_simulate.py",
        "test_vector_index.py",
    }
)


_SESSION_CACHE = tempfile.TemporaryDirectory(prefix="routeguard-test-cache-")


def pytest_configure(config: pytest.Config) -> None:
    """Keep what the embedder's precision calibration stores inside this test session."""
    os.environ.setdefault("ROUTEGUARD_CACHE_DIR", _SESSION_CACHE.name)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Remove the session's cache directory."""
    _SESSION_CACHE.cleanup()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the tests of the SIMD-sensitive modules ``simd``."""
    for item in items:
        if item.path.name in SIMD_SENSITIVE:
            item.add_marker(pytest.mark.simd)


def _redis_binary() -> str:
    binary = shutil.which("redis-server")
    if binary is not None:
        return binary
    if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
        pytest.fail("redis-server is not installed but CI is set: apt-get install redis-server")
    pytest.skip("redis-server not found: apt-get install redis-server to run the Redis tests")


class RedisProcess:
    """One ``redis-server`` child process on a fixed port, stoppable and restartable."""

    def __init__(self, binary: str, workdir: Path, *extra: str) -> None:
        self.binary = binary
        self.workdir = workdir
        self.extra = extra  # more redis-server arguments (e.g. --replicaof host port)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> None:
        """Start the server and wait until it accepts connections."""
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--save", "", "--appendonly", "no", "--dir", str(self.workdir), *self.extra]
        self._proc = subprocess.Popen(
            args, cwd=self.workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self._proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not answer on port {self.port} in {timeout} s")

    def stop(self) -> None:
        """Stop the server (its data is gone: persistence is off)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None


@pytest.fixture(scope="module")
def mock() -> Iterator[MockServer]:
    """The simulated upstream (``routeguard.mock``), one per test module."""
    with MockServer() as m:
        yield m


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a redis-server shared by the session (use your own key prefix)."""
    server = RedisProcess(_redis_binary(), tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def redis_process(tmp_path: Path) -> Iterator[RedisProcess]:
    """A redis-server of this test alone, already started; the test may stop/restart it."""
    server = RedisProcess(_redis_binary(), tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_replicated(tmp_path: Path) -> Iterator[tuple[RedisProcess, RedisProcess]]:
    """A redis-server and one replica of it (linked and synced) for this test alone."""
    binary = _redis_binary()
    (tmp_path / "master").mkdir()
    (tmp_path / "replica").mkdir()
    master = RedisProcess(binary, tmp_path / "master")
    master.start()
    replica = RedisProcess(
        binary, tmp_path / "replica", "--replicaof", "127.0.0.1", str(master.port)
    )
    try:
        replica.start()
        client = redis.Redis(port=replica.port)
        try:
            deadline = time.monotonic() + 30
            while client.info("replication").get("master_link_status") != "up":
                if time.monotonic() > deadline:
                    raise RuntimeError("the replica did not sync")
                time.sleep(0.05)
        finally:
            client.close()
        yield master, replica
    finally:
        replica.stop()
        master.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterNodes]:
    """A real 3-master Redis Cluster shared by the session (``cluster_nodes.py``); its
    ``url`` is a ``redis+cluster://`` URL. Skipped (failed under CI) without the binaries."""
    server = _redis_binary()
    cli = shutil.which("redis-cli")
    if cli is None:
        if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
            pytest.fail("redis-cli is not installed but CI is set: apt-get install redis-server")
        pytest.skip("redis-cli not found: apt-get install redis-server (it ships redis-tools)")
    nodes = ClusterNodes(server, cli, tmp_path_factory.mktemp("redis-cluster"))
    nodes.start()
    try:
        yield nodes
    finally:
        nodes.stop()


ServeConfig = Callable[..., AbstractContextManager[Served]]


@pytest.fixture
def serve_config(tmp_path: Path) -> ServeConfig:
    """``with serve_config(cfg, "--workers", "2", env={...}) as served``: ``routeguard
    serve`` on ``cfg`` (written to ``routeguard.json`` in the test's directory), once
    ``/health/readiness`` answers (within 60 s: workers load their models first)."""

    def start(
        cfg: dict[str, Any], *flags: str, env: dict[str, str] | None = None
    ) -> AbstractContextManager[Served]:
        path = tmp_path / "routeguard.json"
        path.write_text(json.dumps(cfg))
        return serve("--config", str(path), *flags, env=env, ready="/health/readiness",
                     timeout=60.0)  # fmt: skip

    return start
