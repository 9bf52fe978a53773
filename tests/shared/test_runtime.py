"""The shared clients: a burst of Redis commands waits for a pooled connection, and a command
whose pooled connection died with a Redis restart is retried, against the session's real Redis;
start-up index creation rides out a connection MongoDB drops in the middle."""
import asyncio

from shared.runtime import connect_redis
from shared.storage.mongo import ensure_indexes
from shared.storage.topics import TopicStore

from ..conftest import fail_point


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


async def test_index_creation_is_tried_again_after_a_dropped_connection(runtime, scratch_db, caplog):
    # The real server drops the connection of the first two createIndexes of this test's client:
    # the driver's own retry meets the second drop, ensure_indexes tries again.
    async with fail_point(runtime, ["createIndexes"], {"times": 2}, closeConnection=True):
        await ensure_indexes([TopicStore(db=scratch_db)])
    names = {index["name"] async for index in await scratch_db["topic_subscribers"].list_indexes()}
    assert {"topic_user", "user"} <= names
    assert any("creating the indexes of TopicStore failed" in r.getMessage() for r in caplog.records)
