"""The Socket.IO client manager every worker shares: python-socketio's Redis manager, targeted.

An emit to a user's room (``user:<id>``), from a worker or from a write-only manager in any other
process, is published only to the workers holding that user (the lookup of shared/presence.py),
each on a channel of its own, ``<channel>:<worker id>``. Everything else (other rooms,
broadcasts, disconnects, room changes, callbacks) goes on the shared channel, as with
AsyncRedisManager. Each worker listens to its own channel and the shared one, so managers that
do not target (``targeted=False``, NOTIHUB_BUS_TARGETED=0) still reach every worker.

An emit to a user is as reliable as before: a socket joins ``user:<id>`` after its lease is
written, so whoever the lookup misses was not in the room yet; and pub/sub emits were never
stored, on any channel.
"""
from __future__ import annotations

import asyncio
from typing import Any

import socketio
from redis.exceptions import RedisError

from shared.presence import Presence

USER_ROOM = "user:"


class TargetedRedisManager(socketio.AsyncRedisManager):
    """AsyncRedisManager whose emits to ``user:<id>`` reach only the workers holding the user."""

    name = "notihub-targeted-redis"

    def __init__(self, url: str, *, channel: str, prefix: str, worker_id: str | None = None,
                 targeted: bool = True, write_only: bool = False, **kwargs: Any) -> None:
        super().__init__(url, channel=channel, write_only=write_only, **kwargs)
        self.prefix = prefix
        self.worker_id = worker_id
        self.targeted = targeted
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
        super()._redis_connect()
        # The lookup script is bound to the client it runs on: a new one after each reconnection.
        self._presence = Presence(redis=self.redis, prefix=self.prefix)

    async def _publish(self, data: dict[str, Any]) -> Any:
        user = self._user(data) if self.targeted else None
        if user is None:
            return await super()._publish(data)
        # As AsyncRedisManager does: two attempts, then the emit is given up (and logged).
        for retries_left in (1, 0):
            try:
                if not self.connected or self._presence is None:
                    self._redis_connect()
                workers = (await self._presence.workers([user])).get(user, set())
                workers.discard(self.worker_id)  # handled here already, by the emit itself
                if not workers:
                    return 0
                message = self.json.dumps(data)
                async with self.redis.pipeline(transaction=False) as pipe:
                    for worker in sorted(workers):
                        pipe.publish(self.channel_of(worker), message)
                    return sum(await pipe.execute())
            except (RedisError, OSError) as exc:
                self._get_logger().error("cannot publish a targeted emit to redis (%s)%s", exc,
                                         "; retrying" if retries_left else "; giving up")
                self.connected = False
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
                await self.pubsub.subscribe(*channels)
                retry = 1.0
                async for message in self.pubsub.listen():
                    if message.get("type") == "message" and message.get("channel") in wanted:
                        yield message["data"]
            except (RedisError, OSError) as exc:
                self._get_logger().error("cannot receive from redis (%s); retrying in %.0f s", exc, retry)
                await asyncio.sleep(retry)
                retry = min(retry * 2, 60.0)
