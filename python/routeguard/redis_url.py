"""Redis URLs of the shared stores: one server, or a Redis Cluster named by its seed nodes.

``redis://``, ``rediss://`` and ``unix://`` URLs name one server (redis-py's own syntax).
A Redis Cluster is named by ``redis+cluster://[user:password@]host:port[,host:port...]``
(``rediss+cluster://`` for TLS): one or more seed nodes, from which the client learns the
whole slot map, so any reachable seed is enough at start-up. A cluster has only database 0.

Data flow: the budget and key stores call :func:`cluster_target` on their URL; ``None``
means one server (they keep their usual client), else the parsed :class:`ClusterTarget`
builds a ``RedisCluster`` client (async for the budget, sync for the key store) that routes
each command to the master owning its key's slot. Everything a script touches shares one
hash tag, so one slot. :func:`url_problem` is the check ``config.load`` runs on the URLs;
:func:`stream_id` orders the ids of the stores' event streams.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import redis.asyncio.cluster as aiocluster
import redis.cluster as synccluster
from redis.crc import key_slot

from routeguard.errors import ConfigError, ConfigProblem

CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
_SCHEMES = ("redis", "rediss", "unix", *CLUSTER_SCHEMES)


@dataclass(frozen=True, slots=True)
class ClusterTarget:
    """A parsed cluster URL: seed nodes and credentials."""

    seeds: tuple[tuple[str, int], ...]
    username: str | None = None
    password: str | None = None
    ssl: bool = False

    @property
    def where(self) -> str:
        """The seeds as ``cluster host:port,...``, for logs (never the password)."""
        return "cluster " + ",".join(f"{h}:{p}" for h, p in self.seeds)

    def _kwargs(self, timeout_s: float, max_connections: int) -> dict[str, Any]:
        return {
            "username": self.username,
            "password": self.password,
            "ssl": self.ssl,
            "socket_timeout": timeout_s,
            "socket_connect_timeout": timeout_s,
            "max_connections": max_connections,
        }

    def async_client(
        self, *, timeout_s: float, max_connections: int, retry: Any = None
    ) -> aiocluster.RedisCluster:
        """A ``redis.asyncio`` cluster client (connects lazily, on the first command)."""
        nodes = [aiocluster.ClusterNode(h, p) for h, p in self.seeds]
        kwargs = self._kwargs(timeout_s, max_connections)
        return aiocluster.RedisCluster(startup_nodes=nodes, retry=retry, **kwargs)

    def sync_client(self, *, timeout_s: float, max_connections: int = 32) -> Any:
        """A blocking cluster client (``redis.cluster.RedisCluster``; connects at once)."""
        nodes = [synccluster.ClusterNode(h, p) for h, p in self.seeds]  # type: ignore[no-untyped-call]
        kwargs = self._kwargs(timeout_s, max_connections)
        return synccluster.RedisCluster(startup_nodes=nodes, **kwargs)


def _parse_seed(text: str) -> tuple[str, int]:
    host, port = text, "6379"
    if text.startswith("["):  # [ipv6]:port
        end = text.find("]")
        if end < 0:
            raise ValueError(f"seed '{text}': unclosed '['")
        host, rest = text[1:end], text[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"seed '{text}': expected [host]:port")
            port = rest[1:]
    elif ":" in text:
        host, port = text.rsplit(":", 1)
    if not host:
        raise ValueError(f"seed '{text}' has no host")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"seed '{text}': port must be a number in 1-65535")
    return host, int(port)


def _parse(url: str) -> ClusterTarget | None:
    """The cluster target of ``url``, None for one server; ValueError says what is wrong."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in _SCHEMES:
        raise ValueError(
            "expected a redis://, rediss://, unix:// URL, or redis+cluster://host:port[,...] "
            "for a Redis Cluster"
        )
    if scheme not in CLUSTER_SCHEMES:
        return None
    rest, _, query = rest.partition("?")
    if query:
        raise ValueError("a redis+cluster:// URL takes no ?options")
    netloc, _, path = rest.partition("/")
    if path not in ("", "0"):
        raise ValueError(f"a Redis Cluster has only database 0, not '/{path}'")
    userinfo, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user, _, secret = userinfo.partition(":")  # as redis-py: user[:password]
        username, password = unquote(user) or None, unquote(secret) or None
    seeds = tuple(_parse_seed(s.strip()) for s in hosts.split(",") if s.strip())
    if not seeds:
        raise ValueError("a redis+cluster:// URL needs at least one seed host:port")
    return ClusterTarget(seeds, username, password, ssl=scheme == "rediss+cluster")


def url_problem(url: str) -> str | None:
    """What is wrong with a store URL, or None when it is usable."""
    try:
        _parse(url)
    except ValueError as exc:
        return str(exc)
    return None


def cluster_target(url: str, param: str = "redis_url") -> ClusterTarget | None:
    """The :class:`ClusterTarget` of a ``redis+cluster://`` URL, None for one server; a
    malformed URL raises :class:`~routeguard.errors.ConfigError` naming ``param``."""
    try:
        return _parse(url)
    except ValueError as exc:
        raise ConfigError([ConfigProblem(param, str(exc))], source="<redis url>") from None


def slot(key: str | bytes) -> int:
    """The Redis Cluster hash slot of ``key`` (its ``{hash tag}`` when it has one)."""
    return key_slot(key.encode() if isinstance(key, str) else key)


def stream_id(raw: bytes | str) -> tuple[int, int]:
    """A Redis stream entry id (``<ms>-<seq>``) as a comparable (milliseconds, sequence) pair."""
    text = raw.decode() if isinstance(raw, bytes) else raw
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)
