"""Which sockets each user has open, and on which socket worker: a Redis sorted set per user.

Keys are ``{<prefix>:presence:<bucket>}:<user>``, the bucket a hash of the user among
PRESENCE_BUCKETS: on a Redis Cluster the users of one bucket share a hash slot, so a lookup of
many users is one script per bucket (at most PRESENCE_BUCKETS, run concurrently on their shards)
instead of one per user; a single Redis runs one script for all of them.

Member = a socket's Socket.IO sid, which starts with ``<worker id>.`` (socket_server/engine.py);
score = the expiry of its lease. Socket workers write it (admit at the handshake, refresh,
release); the bus and the Socket.IO manager read it to send a user's events only to the workers
that hold the user (``workers``).

Invariants:

1. A socket's lease is written (admit) before its sync reads the inbox snapshot from the primary,
   and stays until the socket closes: refreshed every LEASE_SECONDS / 3, re-created by its worker
   when it is found missing (after a Redis restart, before the worker's position check).
2. A dead worker cannot remove its leases: they run out after LEASE_SECONDS; meanwhile events
   are sent to a channel nobody listens to, which costs a publish and loses nothing.
"""
from __future__ import annotations

import asyncio
import time
import zlib
from collections import defaultdict
from collections.abc import Sequence

from . import redisconn

# A worker that dies cannot remove its sockets: entries expire unless refreshed.
LEASE_SECONDS = 90
# Presence keys one lookup script reads: a larger lookup is several calls, so that Redis is
# never blocked long by one of them.
LOOKUP_KEYS = 5000
# The Socket.IO room of a user's sockets: "user:<id>" (the targeted manager routes emits to it).
USER_ROOM = "user:"
# Hash slots the presence keys are spread over on a Redis Cluster (see the module's docstring).
PRESENCE_BUCKETS = 256

_ADMIT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"""

# Lua: the distinct workers of the live leases under one presence key, in the order found (a
# sid is "<worker id>.<rest>"). Scripts that route by presence start with it (see bus.py).
WORKERS_OF_LUA = """
local function workers_of(key, now)
  local seen, list = {}, {}
  for _, sid in ipairs(redis.call('ZRANGEBYSCORE', key, '(' .. now, '+inf')) do
    local dot = string.find(sid, '.', 1, true)
    if dot then
      local worker = string.sub(sid, 1, dot - 1)
      if not seen[worker] then
        seen[worker] = true
        list[#list + 1] = worker
      end
    end
  end
  return list
end
"""

# For each key (a user), the distinct workers of its live leases: a flat list of
# (key index, worker id) pairs, only for users with a socket somewhere.
_WORKERS = WORKERS_OF_LUA + """
local found = {}
for i, key in ipairs(KEYS) do
  for _, worker in ipairs(workers_of(key, ARGV[1])) do
    found[#found + 1] = i
    found[#found + 1] = worker
  end
end
return found
"""


class Presence:
    """A sorted set per user: member = socket, score = lease expiry."""

    def __init__(self, *, redis: redisconn.Client, prefix: str, limit: int = 0) -> None:
        self._redis = redis
        self._prefix = prefix
        self._limit = limit
        self._sharded = redisconn.is_cluster(redis)
        self._admit = redis.register_script(_ADMIT)
        self._workers = redis.register_script(_WORKERS)

    def key(self, user: str) -> str:
        """The Redis key of ``user``'s leases."""
        bucket = zlib.crc32(user.encode("utf-8", "surrogatepass")) % PRESENCE_BUCKETS
        return f"{redisconn.tag(f'{self._prefix}:presence:{bucket}')}:{user}"

    async def admit(self, user: str, sid: str) -> bool:
        """Count a new socket of ``user``; False when the user already has too many."""
        now = time.time()
        admitted = await self._admit(
            keys=[self.key(user)], args=[now, now + LEASE_SECONDS, self._limit, sid, LEASE_SECONDS * 2]
        )
        return bool(admitted)

    async def release(self, user: str, sid: str) -> None:
        """Forget a closed socket."""
        await self._redis.zrem(self.key(user), sid)

    async def forget(self, sockets: Sequence[tuple[str, str]]) -> None:
        """Forget several closed sockets (user, sid) in one round trip."""
        if not sockets:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for user, sid in sockets:
                pipe.zrem(self.key(user), sid)
            await pipe.execute()

    async def refresh(self, sockets: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
        """Extend the leases of this worker's open sockets (user, sid) in one round trip; return
        those whose lease was missing and is written again (Redis restarted, or it ran out)."""
        if not sockets:
            return []
        expiry = time.time() + LEASE_SECONDS
        async with self._redis.pipeline(transaction=False) as pipe:
            for user, sid in sockets:
                pipe.zadd(self.key(user), {sid: expiry})
                pipe.expire(self.key(user), LEASE_SECONDS * 2)
            results = await pipe.execute()
        # ZADD answers how many members it added: 1 for a lease that was gone.
        return [socket for socket, added in zip(sockets, results[::2]) if added]

    async def workers(self, users: Sequence[str]) -> dict[str, set[str]]:
        """The workers holding a live lease of each user; users with no socket anywhere are left out.

        One round trip (a script over the users' keys) for up to LOOKUP_KEYS users; on a
        cluster, one script per bucket, concurrently."""
        keys = {user: self.key(user) for user in users}
        now = time.time()
        if self._sharded:
            by_bucket: dict[str, list[str]] = defaultdict(list)
            for user, key in keys.items():
                by_bucket[key.partition("}")[0]].append(user)
            groups = list(by_bucket.values())
        else:
            groups = [list(keys)]
        chunks = [group[start : start + LOOKUP_KEYS] for group in groups for start in range(0, len(group), LOOKUP_KEYS)]
        answers = await asyncio.gather(*(self._workers(keys=[keys[u] for u in chunk], args=[now])
                                         for chunk in chunks))
        found: dict[str, set[str]] = {}
        for chunk, flat in zip(chunks, answers):
            for index, worker in zip(flat[::2], flat[1::2]):
                found.setdefault(chunk[int(index) - 1], set()).add(
                    worker.decode() if isinstance(worker, bytes) else worker)
        return found
