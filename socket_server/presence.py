"""How many sockets each user has open, across all workers (for too_many_connections)."""
from __future__ import annotations

import time

import redis.asyncio as aioredis

# A worker that dies cannot remove its sockets: entries expire unless refreshed.
LEASE_SECONDS = 90

_ADMIT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"""


class Presence:
    """A sorted set per user: member = socket, score = lease expiry."""

    def __init__(self, *, redis: aioredis.Redis, prefix: str, limit: int) -> None:
        self._redis = redis
        self._prefix = prefix
        self._limit = limit
        self._admit = redis.register_script(_ADMIT)

    def _key(self, user: str) -> str:
        return f"{self._prefix}:presence:{user}"

    async def admit(self, user: str, sid: str) -> bool:
        """Count a new socket of ``user``; False when the user already has too many."""
        now = time.time()
        admitted = await self._admit(
            keys=[self._key(user)], args=[now, now + LEASE_SECONDS, self._limit, sid, LEASE_SECONDS * 2]
        )
        return bool(admitted)

    async def release(self, user: str, sid: str) -> None:
        """Forget a closed socket."""
        await self._redis.zrem(self._key(user), sid)

    async def refresh(self, sockets: list[tuple[str, str]]) -> None:
        """Extend the leases of this worker's open sockets (user, sid) in one round trip."""
        if not sockets:
            return
        expiry = time.time() + LEASE_SECONDS
        async with self._redis.pipeline(transaction=False) as pipe:
            for user, sid in sockets:
                pipe.zadd(self._key(user), {sid: expiry}, xx=True)
                pipe.expire(self._key(user), LEASE_SECONDS * 2)
            await pipe.execute()
