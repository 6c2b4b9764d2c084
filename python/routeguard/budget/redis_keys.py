"""RedisKeyStore: virtual keys shared by every proxy instance through plain Redis 7.

The records (never the keys themselves: only their keyed hashes) live in one Redis hash;
each instance keeps the whole set in memory, as :class:`~routeguard.budget.keys.KeyStore`
does, so authentication never waits on the network. A write (create, update, rotate,
revoke) is one atomic round trip, a small Lua script: ``HSET`` the record and ``XADD`` its
id to an events stream. A daemon thread per instance tails that stream (``XREAD BLOCK``)
and reloads each record named, so a key made on instance A authenticates on B, and a key
revoked on A fails on B, a few milliseconds later.

Key layout (``P`` is the prefix, default ``rg:keys``; all keys share the hash tag ``{P}``,
so the script runs on Redis Cluster too: a ``redis+cluster://`` URL, see
:mod:`routeguard.redis_url`):

- ``{P}:records``: hash, key id -> the record (JSON: digest, hint, spec, revoked),
- ``{P}:entities``: hash, ``<kind>/<id>`` -> a team, user, customer or org record (JSON),
- ``{P}:events``: stream of the key ids (field ``id``) and entity names (field ``e``)
  written or deleted (trimmed, ``MAXLEN ~ 10000``),
- ``{P}:secret``: the HMAC secret, generated once by the first instance when the config sets
  none (after a restart or FLUSHALL the instances put it back or adopt the new one, so they
  keep hashing alike). Setting ``server.key_hash_secret`` keeps it out of Redis, which is
  better: then a copy of Redis alone cannot test guesses against the digests.

Consistency: on start and after a lost connection the stream's last id is read *before*
the hash is loaded, then tailing starts from that id: a write landing in between is both
loaded and replayed (harmless), none is missed. An instance reads its own writes, ordered
by stream id: the tailer does not apply what it fetched for a name this instance wrote past
the batch it applies (that write's own event follows), and a local write already behind the
tailer's batches is not applied over what they brought. While Redis is unreachable the keys in
memory keep working, and a key not among them is answered 503 (it may be new), never let in.
A revoked key stays revoked: the write script refuses a record that is not over one that
is, so an instance holding an older copy cannot bring a deleted key back. A Redis that comes
back empty (restart, FLUSHALL, failover to an empty replica) empties the
mirror: every key fails, since whether keys are required is the proxy's configuration.
"""

from __future__ import annotations

import logging
import secrets
import threading
from typing import Any

import msgspec
import redis
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException, RedisError

from routeguard.budget.keys import KeyRecord, KeyRevoked, KeyStore, KeyStoreUnavailable
from routeguard.redis_url import cluster_target, stream_id

__all__ = ["KeyStoreUnavailable", "RedisKeyStore"]

log = logging.getLogger("routeguard.keys")
_enc = msgspec.json.Encoder()
_dec = msgspec.json.Decoder(KeyRecord)
# The cluster client raises RedisClusterException (not a RedisError) when no node answers.
_FAILED = (RedisError, RedisClusterException)
# KEYS: the records hash, the events stream; ARGV: key id, record, '1' if it is revoked.
# A revoked key stays revoked: a record that is not is refused over one that is (a writer
# holding an older copy), and the reply is false.
_SAVE = """
if ARGV[3] ~= '1' then
  local cur = redis.call('HGET', KEYS[1], ARGV[1])
  if cur and cjson.decode(cur)['revoked'] == true then return false end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return redis.call('XADD', KEYS[2], 'MAXLEN', '~', '10000', '*', 'id', ARGV[1])
"""
# KEYS: the entities hash, the events stream; ARGV: name, record ('' deletes).
_SAVE_ENTITY = """
if ARGV[2] == '' then
  redis.call('HDEL', KEYS[1], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
return redis.call('XADD', KEYS[2], 'MAXLEN', '~', '10000', '*', 'e', ARGV[1])
"""


class RedisKeyStore(KeyStore):
    """Virtual keys in Redis, mirrored in memory on each instance (see the module docstring)."""

    shared = True

    def __init__(
        self,
        url: str,
        *,
        secret: str | None = None,
        prefix: str = "rg:keys",
        timeout_s: float = 2.0,
    ) -> None:
        """Connect to ``url`` (``redis://host:port/db``, or ``redis+cluster://host:port[,...]``
        for a Redis Cluster), load every key and start tailing."""
        self._lock = threading.Lock()
        self._records: dict[str, KeyRecord] = {}
        self._by_digest: dict[str, KeyRecord] = {}
        self._entities: dict[str, bytes] = {}
        # Read-your-writes, ordered by stream id: the id up to which the tailer has applied
        # events, and the id of this instance's last write of each name not yet past it.
        self._through: tuple[int, int] = (0, 0)
        self._marks: dict[str, tuple[int, int]] = {}
        self._tag = f"{{{prefix}}}"
        self._hash = f"{self._tag}:records"
        self._entity_hash = f"{self._tag}:entities"
        self._stream = f"{self._tag}:events"
        target = cluster_target(url, "server.redis_url")
        configured = secret is not None
        try:
            if target is None:
                self._redis: redis.Redis | RedisCluster = redis.Redis.from_url(
                    url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
                )
                kw = self._redis.connection_pool.connection_kwargs
                self._where = f"{kw.get('host', '?')}:{kw.get('port', '?')}/{kw.get('db', 0)}"
            else:
                self._where = target.where
                self._redis = target.sync_client(timeout_s=timeout_s)  # connects at once
            self._save_script = self._redis.register_script(_SAVE)
            self._entity_script = self._redis.register_script(_SAVE_ENTITY)
            if secret is None:
                self._redis.set(f"{self._tag}:secret", secrets.token_hex(32), nx=True)
                stored = self._redis.get(f"{self._tag}:secret")
                assert isinstance(stored, bytes)
                secret = stored.decode()
            self._last = self._resync()
            # The tailer blocks in XREAD for up to a second: its own connection, so writes
            # from the event loop's thread never queue behind it.
            self._tail_client: redis.Redis | RedisCluster
            if target is None:
                self._tail_client = redis.Redis.from_url(
                    url, socket_timeout=timeout_s + 2.0, socket_connect_timeout=timeout_s
                )
            else:
                self._tail_client = target.sync_client(timeout_s=timeout_s + 2.0, max_connections=2)
        except _FAILED as exc:
            self._close_clients()
            raise KeyStoreUnavailable(
                f"key store {self._where} is unreachable ({type(exc).__name__}): "
                "start Redis or fix server.redis_url"
            ) from None
        self._secret = secret.encode()
        self._secret_in_redis = not configured
        self._broken = False  # the tailer lost Redis: a key not in memory cannot be checked
        self._reloads: list[threading.Event] = []  # refresh() calls waiting for the tailer
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._tail, name="routeguard-keys", daemon=True)
        self._thread.start()

    def _resync(self) -> str:
        """Reload every record; returns the stream id to tail from."""
        last: Any = self._redis.xrevrange(self._stream, count=1)
        start = last[0][0].decode() if last else "0-0"
        raw: dict[bytes, bytes] = self._redis.hgetall(self._hash)  # type: ignore[assignment]
        found: dict[bytes, bytes] = self._redis.hgetall(self._entity_hash)  # type: ignore[assignment]
        records = {}
        for blob in raw.values():
            rec = _dec.decode(blob)
            records[rec.key_id] = rec
        with self._lock:
            self._records = records
            self._by_digest = {r.digest: r for r in records.values()}
            self._entities = {n.decode(): bytes(b) for n, b in found.items()}
            # A write racing this reload has an event past ``start``: replayed, it converges.
            # Marks go (ids may run backwards after a failover to an emptied Redis).
            self._through = stream_id(start)
            self._marks = {}
        return start

    def _save(self, rec: KeyRecord) -> None:
        try:
            written = self._save_script(
                keys=[self._hash, self._stream],
                args=[rec.key_id, _enc.encode(rec), "1" if rec.revoked else "0"],
            )
        except _FAILED as exc:
            raise KeyStoreUnavailable(
                f"key store {self._where} is unreachable ({type(exc).__name__}); "
                f"key {rec.key_id} was not changed"
            ) from None
        if written is None:  # revoked meanwhile by another instance
            raise KeyRevoked(rec.key_id)
        with self._lock:
            if self._mine("k:" + rec.key_id, written):
                self._apply(rec)

    def put_entity(self, name: str, blob: bytes) -> None:
        """Store the blob named ``name`` in Redis (every instance sees it a moment later)."""
        written = self._write_entity(name, blob)
        with self._lock:
            if self._mine("e:" + name, written):
                self._entities[name] = blob

    def delete_entity(self, name: str) -> None:
        """Delete the blob named ``name`` in Redis, for every instance."""
        written = self._write_entity(name, b"")
        with self._lock:
            if self._mine("e:" + name, written):
                self._entities.pop(name, None)

    def _mine(self, name: str, written: Any) -> bool:
        """Whether this instance's write of ``name`` (its event's stream id ``written``) is
        to be applied here now, noting it for the tailer (the caller holds the lock). Not
        when the tailer already applied events past it (what it fetched then is this write
        or a later one), nor over a later write of this instance applied first."""
        w = stream_id(written)
        if w <= self._through or w < self._marks.get(name, w):
            return False  # the tailer, or a later write of this instance, is past it
        self._marks[name] = w
        return True

    def _write_entity(self, name: str, blob: bytes) -> Any:
        try:
            return self._entity_script(keys=[self._entity_hash, self._stream], args=[name, blob])
        except _FAILED as exc:
            raise KeyStoreUnavailable(
                f"key store {self._where} is unreachable ({type(exc).__name__}); "
                f"{name} was not changed"
            ) from None

    def _tail(self) -> None:
        """Apply the records other instances write, until ``close``."""
        broken = False
        while not self._stop.is_set():
            try:
                if broken or self._reloads:
                    asked = list(self._reloads)
                    self._last = self._resync()
                    self._follow_secret()
                    if broken:
                        log.info("key store %s: reconnected and reloaded", self._where)
                    broken = self._broken = False
                    for done in asked:
                        self._reloads.remove(done)
                        done.set()
                batches: Any = self._tail_client.xread({self._stream: self._last}, block=1000)
                if batches:
                    self._follow_secret()
                for _, events in batches or ():
                    ids = [f[b"id"] for _, f in events if b"id" in f]
                    names = [f[b"e"] for _, f in events if b"e" in f]
                    through = stream_id(events[-1][0])
                    blobs = self._tail_client.hmget(self._hash, ids) if ids else []
                    found: Any = self._tail_client.hmget(self._entity_hash, names) if names else []
                    with self._lock:
                        # A name this instance wrote past this batch keeps its value: what
                        # was fetched may predate that write, whose own event comes later.
                        marks = self._marks
                        for blob in blobs:
                            if blob is not None:
                                rec = _dec.decode(blob)
                                if marks.get("k:" + rec.key_id, through) <= through:
                                    self._apply(rec)
                        for raw_name, blob in zip(names, found, strict=True):
                            name = raw_name.decode()
                            if marks.get("e:" + name, through) > through:
                                continue
                            if blob is None:
                                self._entities.pop(name, None)
                            else:
                                self._entities[name] = bytes(blob)
                        self._marks = {n: w for n, w in marks.items() if w > through}
                        self._through = through
                    self._last = events[-1][0].decode()
            except _FAILED as exc:
                if self._stop.is_set():
                    return
                if not broken:
                    log.warning(
                        "key store %s unreachable (%s): serving the keys loaded so far",
                        self._where,
                        type(exc).__name__,
                    )
                broken = self._broken = True
                self._stop.wait(0.5)  # the reconnect pace of a background thread

    def _follow_secret(self) -> None:
        """Keep the HMAC secret Redis holds, when the config sets none: put ours back if Redis
        lost it (restart, FLUSHALL), adopt the one there if another instance got in first, so
        every instance hashes keys alike (runs on the tailer's thread)."""
        if not self._secret_in_redis:
            return
        name = f"{self._tag}:secret"
        self._tail_client.set(name, self._secret, nx=True)
        stored: Any = self._tail_client.get(name)
        if isinstance(stored, bytes) and stored != self._secret:
            log.warning("key store %s: adopting the key hash secret now in Redis", self._where)
            self._secret = stored

    def _sync(self) -> None:
        """Nothing to do: the tailer applies other instances' writes as they land."""

    def _missed(self) -> None:
        """A key not in memory while Redis is unreachable may be new: 503, not 401."""
        if self._broken:
            raise KeyStoreUnavailable(
                f"key store {self._where} is unreachable: this key cannot be checked now"
            )

    def refresh(self) -> None:
        """Reload every record now (an operator after a restore). The tailer thread does it
        between two batches, so a reload never races one it is applying; this returns once
        it is done (within about a second, or after 10 s without Redis)."""
        done = threading.Event()
        self._reloads.append(done)
        done.wait(10)

    def ping(self) -> None:
        """Raise unless Redis answers a PING (the proxy's readiness check; blocking)."""
        self._redis.ping()

    def close(self) -> None:
        """Stop tailing and close the connections."""
        self._stop.set()
        self._thread.join(timeout=5)
        self._close_clients()

    def _close_clients(self) -> None:
        for name in ("_redis", "_tail_client"):
            client = getattr(self, name, None)
            if client is not None:
                client.close()
