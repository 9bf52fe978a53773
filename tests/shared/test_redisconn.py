"""The Redis clients (shared/redisconn.py) on both event loops the servers may run: a closed
connection is a connection error, retried, never a RuntimeError or AttributeError that no
fallback catches. Against the session's real Redis (and, imported by tests/cluster, a cluster)."""
import asyncio

import pytest

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
