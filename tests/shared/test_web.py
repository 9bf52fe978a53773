"""Process-level helpers shared by the API, the socket workers and the ingest workers."""
import asyncio
import contextlib
import signal
import subprocess
import sys
import textwrap

from shared.web import essential_tasks

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
