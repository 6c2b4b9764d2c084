"""The Redis wire format of the shared semantic cache (:mod:`routeguard.cache.redis_store`):
key layout, the Lua scripts that change entries atomically, and an entry's hash.

Key layout (``P`` is the prefix, default ``rg:cache``; every key carries the hash tag
``{P}``, so on Redis Cluster the whole cache sits in one slot and a MULTI or script may
touch several keys):

- ``{P}:e:<exact key>``: one hash per entry: ``prompt``, ``response`` and ``metadata``
  (msgpack), ``vector`` (float32 bytes), ``namespace``, ``partition``, ``created``,
  ``expires`` (``""`` for none), ``version``; with a Redis TTL when the entry has one.
- ``{P}:events``: the stream every instance tails (trimmed with ``MAXLEN ~``), one event
  per write: ``op=put key ver`` | ``op=del key ver`` | ``op=inv field before``.
- ``{P}:rules``: invalidation rules, ``field`` -> ``before``: entries of that scope created
  earlier are dead wherever they turn up. ``field`` is a
  :class:`~routeguard.cache.state.Selector`: ``*`` (all), ``ns:<namespace>``, or
  ``sel:<JSON>`` for any mix of namespace, tenant, route and prompt digest (the admin
  API's ``DELETE /admin/cache``). An instance checks an entry against one field per
  selector shape in use, so the number of rules does not slow a put.
"""

from __future__ import annotations

import logging
import re

import msgspec
import numpy as np

from routeguard.cache.state import CacheEntry, LocalState, Vector

logger = logging.getLogger("routeguard.cache")
_GLOB = re.compile(r"([*?\[\]\\])")

# KEYS: entry, stream. ARGV: key, version ("" any), namespace filter ("\0" none),
# older-than filter ("" none), stream maxlen, announce ("1" XADD a del event).
DELETE_IF = """
local h = redis.call('HMGET', KEYS[1], 'version', 'namespace', 'created')
if not h[1] then return 0 end
if ARGV[2] ~= '' and h[1] ~= ARGV[2] then return 0 end
if ARGV[3] ~= '\\0' and h[2] ~= ARGV[3] then return 0 end
if ARGV[4] ~= '' and tonumber(h[3]) >= tonumber(ARGV[4]) then return 0 end
redis.call('DEL', KEYS[1])
if ARGV[6] == '1' then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '*', 'op', 'del', 'key', ARGV[1],
             'ver', h[1])
end
return 1
"""

# KEYS: rules, stream, then entries known to fall under the rule (deleted if they do).
# ARGV: field, before, stream maxlen, namespace ("" for every namespace).
RULE = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if (not cur) or tonumber(cur) < tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
local before = tonumber(ARGV[2])
for i = 3, #KEYS do
  local h = redis.call('HMGET', KEYS[i], 'namespace', 'created')
  if h[2] and tonumber(h[2]) < before and (ARGV[4] == '' or h[1] == ARGV[4]) then
    redis.call('DEL', KEYS[i])
  end
end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'op', 'inv', 'field', ARGV[1],
           'before', ARGV[2])
return 1
"""

# KEYS: entries. ARGV: namespace, encoded tenant, encoded route ("" for any). Returns
# key, namespace, prompt, version of each entry whose namespace passes (a prefilter: the
# caller checks again).
SELECT = """
local out = {}
for i = 1, #KEYS do
  local h = redis.call('HMGET', KEYS[i], 'namespace', 'prompt', 'version')
  local ns = h[1]
  if ns and h[2] and h[3] then
    local ok = ARGV[1] == '' or ns == ARGV[1]
    if ok and ARGV[2] ~= '' then ok = string.sub(ns, 1, #ARGV[2] + 1) == ARGV[2] .. '/' end
    if ok and ARGV[3] ~= '' then ok = string.match(ns, '/([^/]*)/[0-9a-f]+$') == ARGV[3] end
    if ok then
      out[#out + 1] = KEYS[i]
      out[#out + 1] = ns
      out[#out + 1] = h[2]
      out[#out + 1] = h[3]
    end
  end
end
return out
"""


def glob_escape(text: str) -> str:
    """``text`` with the glob metacharacters of a ``SCAN MATCH`` pattern escaped."""
    return _GLOB.sub(r"\\\1", text)


def encode_entry(entry: CacheEntry, vector: Vector) -> dict[str, bytes | str]:
    """The hash fields of ``entry`` (see the key layout above)."""
    return {
        "prompt": entry.prompt,
        "response": msgspec.msgpack.encode(entry.response),
        "metadata": msgspec.msgpack.encode(dict(entry.metadata)),
        "vector": np.ascontiguousarray(vector, dtype="<f4").tobytes(),
        "namespace": entry.namespace,
        "partition": entry.partition,
        "created": repr(entry.created),
        "expires": "" if entry.expires is None else repr(entry.expires),
        "version": entry.version,
    }


def apply_entry(state: LocalState, entry: CacheEntry, vector: Vector) -> None:
    """Apply one entry from Redis; one the index refuses (a NaN vector) is logged, skipped."""
    try:
        state.apply(entry, vector)
    except (ValueError, TypeError):
        logger.exception("skipping cache entry %s from Redis: its vector was refused", entry.key)


def decode_entry(key: str, f: dict[bytes, bytes], dim: int) -> tuple[CacheEntry, Vector] | None:
    """An entry hash as (entry, vector); None if absent or not a complete entry."""
    try:
        vector = np.frombuffer(f[b"vector"], dtype="<f4").astype(np.float32)
        if vector.shape != (dim,):
            return None
        expires = f[b"expires"]
        entry = CacheEntry(
            key=key,
            partition=f[b"partition"].decode(),
            namespace=f[b"namespace"].decode(),
            prompt=f[b"prompt"].decode(),
            response=msgspec.msgpack.decode(f[b"response"]),
            created=float(f[b"created"]),
            expires=float(expires) if expires else None,
            vector_id=0,
            metadata=msgspec.msgpack.decode(f[b"metadata"]),
            version=f[b"version"].decode(),
        )
    except (KeyError, ValueError, msgspec.DecodeError):
        return None
    return entry, vector
