"""The Redis clients (shared/redisconn.py) on both event loops the servers may run: a closed
connection is a connection error, retried, never a RuntimeError or AttributeError that no
fallback catches. Against the session's real Redis (and, imported by tests/cluster, a cluster)."""
import asyncio

import pytest
import redis

from shared import redisconn
from shared.web import new_event_loop

LOOPS = ["uvloop", "asyncio"]


def on_loop(kind, coroutine_function):
    loop = new_event_loop(kind)
    try:
        return loop.run_until_complete(coroutine_function())
    finally:
        loop.close()


@pytest.mark.parametrize("loop", LOOPS)
def test_a_burst_on_a_fresh_client_is_served(settings, loop):
    """Concurrent first commands: on a cluster, the client's first topology refresh closes
    connections that other commands have already taken."""

    async def bursts():
        failed = []
        for trial in range(10):
            client = redisconn.connect(settings.redis_url, timeout=5)
            script = client.register_script("return redis.call('INCR', KEYS[1])")
            try:
                answers = await asyncio.gather(*(script(keys=[f"burst:{loop}:{trial}:{i % 3}"]) for i in range(10)),
                                               return_exceptions=True)
                failed += [repr(a) for a in answers if isinstance(a, BaseException)]
            finally:
                await client.aclose()
        return failed

    assert on_loop(loop, bursts) == []


@pytest.mark.parametrize("loop", LOOPS)
def test_a_connection_closed_under_the_client_is_made_again(settings, loop):
    if redisconn.is_cluster_url(settings.redis_url):
        pytest.skip("a single server's pool; the cluster's nodes are covered by the burst above")

    async def closed_then_used():
        client = redisconn.connect(settings.redis_url, timeout=5)
        try:
            await client.set("closed-under", "1")
            connection = await client.connection_pool.get_connection()
            connection._writer.transport.close()  # as a reset the loop noticed first
            await client.connection_pool.release(connection)
            return await client.get("closed-under")
        finally:
            await client.aclose()

    assert on_loop(loop, closed_then_used) == b"1"



def test_new_connections_share_the_driver_info_resolved_once(settings):
    """A connection that resolves redis-py's name and version itself (what CLIENT SETINFO tells
    servers that know it) reads the package's metadata from disk; the pool's connections share
    one copy, resolved when the client is made."""
    if redisconn.is_cluster_url(settings.redis_url):
        pytest.skip("the cluster client resolves it once itself")

    async def made():
        client = redisconn.connect(settings.redis_url, timeout=5)
        try:
            connections = [await client.connection_pool.get_connection() for _ in range(3)]
            for connection in connections:
                await client.connection_pool.release(connection)
            return [c.driver_info for c in connections]
        finally:
            await client.aclose()

    infos = on_loop("asyncio", made)
    assert len({id(info) for info in infos}) == 1
    assert (infos[0].name, infos[0].lib_version) == ("redis-py", redis.__version__)
