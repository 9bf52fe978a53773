"""The Socket.IO client manager every worker shares: python-socketio's Redis manager, targeted.

An emit to a user's room (``user:<id>``), from a worker or from a write-only manager in any other
process, is published only to the workers holding that user (the lookup of shared/presence.py),
each on a channel of its own, ``<channel>:<worker id>``. Everything else (other rooms,
broadcasts, disconnects, room changes, callbacks) goes on the shared channel, as with
AsyncRedisManager. Each worker listens to its own channel and the shared one, so managers that
do not target (``targeted=False``, NOTIHUB_BUS_TARGETED=0) still reach every worker.

On a Redis Cluster every channel is a sharded one (SPUBLISH/SSUBSCRIBE).

An emit to a user is as reliable as before: a socket joins ``user:<id>`` after its lease is
written, so whoever the lookup misses was not in the room yet; and pub/sub emits were never
stored, on any channel.
"""
from __future__ import annotations

import asyncio
from typing import Any

import socketio
from redis.exceptions import RedisError

from shared import redisconn
from shared.presence import USER_ROOM, Presence


class TargetedRedisManager(socketio.AsyncRedisManager):
    """AsyncRedisManager whose emits to ``user:<id>`` reach only the workers holding the user.

    It connects as every notihub process does (shared/redisconn.py): to one Redis, or to a Redis
    Cluster with sharded pub/sub, which python-socketio's own manager does not support."""

    name = "notihub-targeted-redis"

    def __init__(self, url: str, *, channel: str, prefix: str, worker_id: str | None = None,
                 targeted: bool = True, write_only: bool = False, timeout: float = 5.0, **kwargs: Any) -> None:
        super().__init__(url, channel=channel, write_only=write_only, **kwargs)
        self.prefix = prefix
        self.worker_id = worker_id
        self.targeted = targeted
        self.timeout = timeout
        self._presence: Presence | None = None

    def channel_of(self, worker: str) -> str:
        """The manager channel only ``worker`` listens to."""
        return f"{self.channel}:{worker}"

    @staticmethod
    def _user(message: dict[str, Any]) -> str | None:
        room = message.get("room")
        if message.get("method") == "emit" and isinstance(room, str) and room.startswith(USER_ROOM):
            return room[len(USER_ROOM):]
        return None

    def _redis_connect(self) -> None:
        # One client for good: it reconnects by itself, with deadlines and retries.
        if self.redis is None:
            self.redis = redisconn.connect(self.redis_url, timeout=self.timeout, max_connections=64)
            self._presence = Presence(redis=self.redis, prefix=self.prefix)
        self.connected = True

    async def _channels_for(self, data: dict[str, Any]) -> list[str]:
        user = self._user(data) if self.targeted else None
        if user is None:
            return [self.channel]
        assert self._presence is not None
        workers = (await self._presence.workers([user])).get(user, set())
        workers.discard(self.worker_id)  # handled here already, by the emit itself
        return [self.channel_of(worker) for worker in sorted(workers)]

    async def _publish(self, data: dict[str, Any]) -> Any:
        # As AsyncRedisManager does: two attempts, then the emit is given up (and logged).
        for retries_left in (1, 0):
            try:
                self._redis_connect()
                channels = await self._channels_for(data)
                if not channels:
                    return 0
                message = self.json.dumps(data)
                async with asyncio.timeout(self.timeout):
                    return sum(await redisconn.publish(self.redis, [(c, message) for c in channels]))
            except (RedisError, OSError, TimeoutError) as exc:
                self._get_logger().error("cannot publish to redis (%s)%s", exc,
                                         "; retrying" if retries_left else "; giving up")
        return None

    async def _listen(self):  # type: ignore[override]
        # The shared channel, and this worker's own (a worker only; a reader without an id
        # hears the shared channel alone).
        channels = [self.channel] + ([self.channel_of(self.worker_id)] if self.worker_id else [])
        wanted = {c.encode() for c in channels}
        retry = 1.0
        while True:
            try:
                self._redis_connect()
                async with redisconn.subscribe(self.redis, channels, timeout=self.timeout) as subscription:
                    retry = 1.0
                    while True:
                        message = await subscription.get(timeout=60.0)
                        if message is not None and message[0] in wanted:
                            yield message[1]
            except (RedisError, OSError, TimeoutError) as exc:
                self._get_logger().error("cannot receive from redis (%s); retrying in %.0f s", exc, retry)
                await asyncio.sleep(retry)
                retry = min(retry * 2, 60.0)
