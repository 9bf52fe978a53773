"""A raw subscriber of some Redis channels, for tests: what each channel carried, in order.

It subscribes as the hub does (shared/redisconn.py): plain pub/sub on one Redis, sharded pub/sub
on a Redis Cluster."""
from __future__ import annotations

import asyncio
import contextlib

from shared import redisconn
from shared.bus import decode

FENCE = b"fence"


class Channels:
    """``async with Channels(redis, {channel: name}) as seen``: ``seen.got[name]`` lists what arrived."""

    def __init__(self, redis: redisconn.Client, channels: dict[str, str]) -> None:
        self.redis = redis
        self.channels = channels
        self.names = {c.encode(): name for c, name in channels.items()}
        self.got: dict[str, list[bytes]] = {name: [] for name in channels.values()}
        self._exit = contextlib.AsyncExitStack()
        self._subscription: redisconn.Subscription | None = None

    async def __aenter__(self) -> "Channels":
        self._subscription = await self._exit.enter_async_context(
            redisconn.subscribe(self.redis, list(self.channels), timeout=10))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._exit.aclose()

    async def _next(self) -> tuple[str, bytes]:
        assert self._subscription is not None
        while True:
            message = await self._subscription.get(timeout=1)
            if message is not None:
                return self.names[message[0]], message[1]

    async def until(self, name: str, found, timeout: float = 15) -> None:
        """Read until channel ``name`` carried a message for which ``found(data)`` is true."""
        if any(found(data) for data in self.got[name]):
            return
        async with asyncio.timeout(timeout):
            while True:
                channel, data = await self._next()
                self.got[channel].append(data)
                if channel == name and found(data):
                    return

    async def fenced(self, timeout: float = 10) -> dict[str, list[bytes]]:
        """Everything published before now: a fence on each channel, read until every fence is
        back (order holds per channel, not across the shards of a cluster)."""
        await redisconn.publish(self.redis, [(channel, FENCE) for channel in self.channels])
        waiting = set(self.channels.values())
        async with asyncio.timeout(timeout):
            while waiting:
                channel, data = await self._next()
                if data == FENCE:
                    waiting.discard(channel)
                else:
                    self.got[channel].append(data)
        return self.got

    def items(self, name: str) -> list[tuple[str, str]]:
        """(recipient, id) of every delivered item the channel carried (heartbeats left out)."""
        events = [decode(m) for m in self.got[name]]
        return [(i.recipient, str(i.id)) for e in events if e is not None and hasattr(e, "items") for i in e.items]
