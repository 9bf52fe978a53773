"""Process-level helpers shared by the API, the socket workers and the ingest workers."""
import signal
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import asyncio, logging
    from shared.web import stop_process_on_failure

    async def essential():
        raise RuntimeError("the listener broke")

    async def main():
        task = asyncio.create_task(essential(), name="bus-listener")
        task.add_done_callback(stop_process_on_failure)
        await asyncio.Event().wait()  # a server that would otherwise go on looking healthy

    logging.basicConfig()
    asyncio.run(main())
""")


def test_a_dead_essential_task_stops_its_process():
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=30)
    assert result.returncode == -signal.SIGTERM
    assert "bus-listener stopped: RuntimeError('the listener broke')" in result.stderr
