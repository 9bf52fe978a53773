"""The servers' event loop (NOTIHUB_EVENT_LOOP): uvloop by default, asyncio's own on request."""
import asyncio

import pytest
import uvloop

from devstack.hub import REPO_ROOT, HubProcess
from devstack.ports import free_port
from shared.settings import Settings, SettingsError
from shared.web import new_event_loop

from ..conftest import SERVICE_KEY


@pytest.mark.parametrize("kind, loop_type", [("uvloop", uvloop.Loop), ("asyncio", asyncio.BaseEventLoop)])
def test_the_named_event_loop_is_made(kind, loop_type):
    loop = new_event_loop(kind)
    try:
        assert isinstance(loop, loop_type)
        assert (kind == "uvloop") == isinstance(loop, uvloop.Loop)
        assert loop.run_until_complete(asyncio.sleep(0, result=kind)) == kind
    finally:
        loop.close()


def test_the_event_loop_setting_is_checked():
    assert Settings.from_env({}).event_loop == "uvloop"
    assert Settings.from_env({"NOTIHUB_EVENT_LOOP": " AsyncIO "}).event_loop == "asyncio"
    with pytest.raises(SettingsError, match="NOTIHUB_EVENT_LOOP must be uvloop or asyncio"):
        Settings.from_env({"NOTIHUB_EVENT_LOOP": "trio"})


def test_the_stack_runs_on_uvloop(stack):
    # Every end-to-end test of the suite therefore runs the servers as deployed.
    for process in [stack.api, *stack.socket_workers.values()]:
        log = process.process.log_path.read_text()
        assert "with uvloop's event loop" in log, process.name


async def test_an_api_on_asyncio_loop_serves_the_same(stack, http):
    env = {**stack.child_env(), "NOTIHUB_EVENT_LOOP": "asyncio"}
    api = HubProcess.api(port=free_port(), env=env, log_path=stack.log_dir / "api-asyncio.log", cwd=REPO_ROOT)
    api.start()
    try:
        async with http.post(f"{api.url}/v1/notifications", headers={"Authorization": f"Bearer {SERVICE_KEY}"},
                             json={"type": "comment.created", "recipients": ["loop-user"],
                                   "title": "on asyncio"}) as response:
            assert response.status == 201, await response.text()
            assert [n["recipient"] for n in (await response.json())["notifications"]] == ["loop-user"]
        assert "with asyncio's event loop" in api.process.log_path.read_text()
    finally:
        api.stop(5)
