"""An Engine.IO session that never joins /notifications is closed by the worker after
NOTIHUB_NAMESPACE_TIMEOUT_SECONDS (3 s in the test stack), so that handshakes alone cannot pile up
sessions; one that joins is kept. Driven with a hand-made long-polling client."""
import time

import orjson


async def _open_session(http, base):
    async with http.get(f"{base}/socket.io/?EIO=4&transport=polling") as resp:
        assert resp.status == 200
        return orjson.loads((await resp.text()).split("\x1e")[0][1:])["sid"]


async def test_a_session_that_never_joins_the_namespace_is_closed(hub, http, stack):
    timeout = hub.settings.namespace_timeout_seconds
    sid = await _open_session(http, stack.worker_urls["w0"])
    url = f"{stack.worker_urls['w0']}/socket.io/?EIO=4&transport=polling&sid={sid}"
    started = time.monotonic()
    # A long-poll returns when the server has something to say: here, that the session is over.
    async with http.get(url) as resp:
        text = await resp.text()
    waited = time.monotonic() - started
    assert resp.status == 200 and text.split("\x1e")[-1] == "1", (resp.status, text)
    assert timeout * 0.9 <= waited <= timeout * 1.5 + 5, waited
    async with http.get(url) as resp:
        assert resp.status == 400  # gone


async def test_a_session_that_joins_is_kept(hub, js):
    sock = await hub.connect(js, "tab", hub.new_user("idle"))
    await sock.wait_for("init")
    await sock.assert_no_event("disconnect", within=hub.settings.namespace_timeout_seconds * 2)
