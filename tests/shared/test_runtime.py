"""The shared clients: a burst of Redis commands waits for a pooled connection, and a command
whose pooled connection died with a Redis restart is retried, against the session's real Redis."""
import asyncio

from shared.runtime import connect_redis


async def test_a_burst_of_redis_commands_waits_for_pooled_connections(settings):
    redis = connect_redis(settings, max_connections=8)
    try:
        # Far more commands at once than connections: none fails with "Too many connections".
        assert all(await asyncio.gather(*(redis.ping() for _ in range(500))))
    finally:
        await redis.aclose()


async def test_commands_after_the_server_closed_every_connection_succeed(settings, runtime):
    redis = connect_redis(settings, max_connections=4)
    try:
        await asyncio.gather(*(redis.ping() for _ in range(4)))  # four pooled connections
        # As a Redis restart does: every client connection is closed by the server.
        await runtime.redis.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
        assert all(await asyncio.gather(*(redis.set(f"runtime-test:{i}", i) for i in range(8))))
    finally:
        await redis.aclose()
