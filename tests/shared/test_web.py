"""Process-level helpers shared by the API, the socket workers and the ingest workers."""
import asyncio
import contextlib
import ipaddress
import signal
import subprocess
import sys
import textwrap

import pytest

from shared.web import client_address, essential_tasks

SCRIPT = textwrap.dedent("""
    import asyncio, logging
    from shared.web import essential_tasks

    async def broken():
        raise RuntimeError("the listener broke")

    async def main():
        async with essential_tasks(bus_listener=broken(), presence_refresh=asyncio.Event().wait()):
            await asyncio.Event().wait()  # a server that would otherwise go on looking healthy

    logging.basicConfig()
    asyncio.run(main())
""")


def test_a_dead_essential_task_stops_its_process():
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=30)
    assert result.returncode == -signal.SIGTERM
    assert "bus_listener stopped: RuntimeError('the listener broke')" in result.stderr


async def test_leaving_the_block_cancels_the_tasks():
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def forever():
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with contextlib.suppress(KeyError):
        async with essential_tasks(forever=forever()):
            await started.wait()
            raise KeyError("startup failed")
    assert cancelled.is_set()


PRIVATE = tuple(ipaddress.ip_network(n) for n in ("127.0.0.0/8", "10.0.0.0/8"))


@pytest.mark.parametrize("peer, forwarded, client", [
    ("198.51.100.7", None, "198.51.100.7"),  # straight from the internet
    ("198.51.100.7", "203.0.113.1", "198.51.100.7"),  # an untrusted peer's header is not believed
    ("127.0.0.1", "203.0.113.1", "203.0.113.1"),  # through the load balancer
    ("127.0.0.1", "6.6.6.6, 203.0.113.1", "203.0.113.1"),  # a forged entry on the left is skipped
    ("127.0.0.1", "203.0.113.1, 10.0.0.2", "203.0.113.1"),  # two proxies of ours
    ("127.0.0.1", "10.0.0.3, 10.0.0.2", "10.0.0.3"),  # a client on the private network
    ("127.0.0.1", None, None),  # an internal caller
    ("127.0.0.1", " , ", None),
    (None, "203.0.113.1", None),
])
def test_the_client_address_is_read_from_the_right(peer, forwarded, client):
    assert client_address(peer, forwarded, PRIVATE) == client
