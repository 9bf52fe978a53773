"""Self-test of the JavaScript client bridge (tests/js/bridge.mjs + tests/jsclient.py).

A tiny python-socketio server on aiohttp, started inside each test on a free 127.0.0.1 port, stands
in for notihub: namespace ``/notifications`` refuses a handshake without a token (from the query or
the ``auth`` object) and otherwise emits ``init``; a few events answer through acknowledgements.
The real ``socket.io-client`` then proves: both transports and the upgrade, ``connect_error``
data, acks and ack timeouts, ``auth``/``query`` reaching the server and being changed for the
next reconnection, and automatic reconnection after the server drops or restarts.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
from urllib.parse import parse_qs

import pytest
import pytest_asyncio
import socketio
from aiohttp import web

try:
    from jsclient import JsAckTimeout, JsBridge, JsBridgeError
except ImportError:  # tests/ imported as a package
    from tests.jsclient import JsAckTimeout, JsBridge, JsBridgeError

NS = "/notifications"

pytestmark = [
    pytest.mark.asyncio,
    pytest.mark.timeout(90),
    pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed"),
]

FAST_RECONNECT = dict(reconnection=True, reconnection_delay=100, reconnection_delay_max=200)


class MiniServer:
    """python-socketio AsyncServer on aiohttp, one namespace, records every handshake."""

    def __init__(self):
        self.sio: socketio.AsyncServer | None = None
        self.runner: web.AppRunner | None = None
        self.port: int | None = None
        self.handshakes: list[dict] = []
        self.received: list[tuple[str, object]] = []
        self._release = asyncio.Event()  # lets handlers that never answer finish at teardown

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{NS}"

    def _build(self) -> web.Application:
        sio = socketio.AsyncServer(async_mode="aiohttp", cors_allowed_origins="*")
        app = web.Application()
        sio.attach(app)

        @sio.on("connect", namespace=NS)
        async def on_connect(sid, environ, auth):
            query = {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
            auth = auth if isinstance(auth, dict) else {}
            token = query.get("token") or auth.get("token")
            record = {
                "sid": sid,
                "query": query,
                "auth": auth,
                "token": token,
                "transport": sio.transport(sid, NS),
            }
            self.handshakes.append(record)
            if not token:
                if query.get("refusal") == "single-arg":
                    # One argument becomes only the *message* (str of it); err.data stays empty.
                    raise socketio.exceptions.ConnectionRefusedError(
                        {"code": "unauthorized", "message": "token missing"})
                raise socketio.exceptions.ConnectionRefusedError(
                    "unauthorized", {"code": "unauthorized", "message": "token missing"})
            await sio.emit("init", {
                "user_id": token,
                "sid": sid,
                "since": auth.get("since", query.get("since")),
                "lang": auth.get("lang") or query.get("content-language"),
                "auth": auth,
                "query": query,
                "connection": len(self.handshakes),
            }, to=sid, namespace=NS)

        @sio.on("echo", namespace=NS)
        async def on_echo(sid, data=None):
            self.received.append(("echo", data))
            return {"ok": True, "echo": data, "sid": sid}

        @sio.on("mark_read", namespace=NS)
        async def on_mark_read(sid, data=None):
            self.received.append(("mark_read", data))
            ids = data.get("ids") if isinstance(data, dict) else None
            if not isinstance(ids, list):
                return {"ok": False, "error": {"code": "bad_request", "message": "ids must be a list"}}
            return {"ok": True, "unread_count": 0, "ids": ids}

        @sio.on("hang", namespace=NS)
        async def on_hang(sid, data=None):
            await self._release.wait()  # never acknowledges while the test runs

        @sio.on("note", namespace=NS)
        async def on_note(sid, data=None):
            self.received.append(("note", data))  # no return value needed: fire and forget

        self.sio = sio
        return app

    async def start(self, port: int = 0) -> None:
        app = self._build()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        self.port = sock.getsockname()[1]
        self.runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self.runner.setup()
        await web.SockSite(self.runner, sock).start()

    async def stop(self) -> None:
        self._release.set()
        if self.sio is not None:
            sio, self.sio = self.sio, None
            await sio.shutdown()
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    async def restart(self) -> None:
        """Stop (dropping every connection) and listen again on the same port."""
        port = self.port
        await self.stop()
        self._release = asyncio.Event()
        await self.start(port)

    def sid_of(self, user: str) -> str:
        return [h["sid"] for h in self.handshakes if h["token"] == user][-1]

    async def emit_to(self, sid: str, event: str, data) -> None:
        await self.sio.emit(event, data, to=sid, namespace=NS)

    async def drop_engine(self, sid: str) -> None:
        """Close the Engine.IO connection under a socket, as a crashed worker or a lost network
        would (unlike ``sio.disconnect``, a deliberate Socket.IO disconnect that the client does
        not retry)."""
        eio_sid = self.sio.manager.eio_sid_from_sid(sid, NS)
        eio_socket = self.sio.eio.sockets.get(eio_sid)
        await self.sio.eio.disconnect(eio_sid)
        if eio_socket is not None and eio_socket.upgraded:
            # python-engineio only queues a CLOSE packet, which the JS client ignores on a
            # websocket, and keeps the websocket open until the ping timeout; ending the writer
            # closes the websocket now.
            await eio_socket.queue.put(None)


@pytest_asyncio.fixture
async def server():
    srv = MiniServer()
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


@pytest_asyncio.fixture
async def js():
    async with JsBridge() as bridge:
        yield bridge


async def test_bridge_starts_and_reports_client_version(js):
    assert js.client_version and js.client_version.startswith("4.")
    assert js.pid


async def test_websocket_connect_init_and_ack(server, js):
    sock = await js.connect("tab1", server.url, transports=["websocket"], query={"token": "user-1"},
                            **FAST_RECONNECT)
    connect = await sock.wait_for("connect", full=True)
    assert connect.transport == "websocket"
    assert connect.engine_id and connect.engine_id == sock.engine_id
    assert sock.transport == "websocket" and sock.connected and sock.sid == connect.data["sid"]

    init = await sock.wait_for("init", timeout=10)
    assert init["user_id"] == "user-1"
    assert server.handshakes[-1]["transport"] == "websocket"

    ack = await sock.emit_ack("mark_read", {"ids": ["n1", "n2"]}, timeout=5)
    assert ack == {"ok": True, "unread_count": 0, "ids": ["n1", "n2"]}
    bad = await sock.emit_ack("mark_read", {"ids": "nope"}, timeout=5)
    assert bad["ok"] is False and bad["error"]["code"] == "bad_request"
    # The socket stays usable after a refused request.
    assert (await sock.emit_ack("echo", {"x": [1, 2, {"y": None}]}))["echo"] == {"x": [1, 2, {"y": None}]}
    assert (await sock.status())["connected"] is True


async def test_polling_transport_and_upgrade(server, js):
    polling = await js.connect("poll", server.url, transports=["polling"], query={"token": "user-1"},
                               **FAST_RECONNECT)
    assert (await polling.wait_for("connect", full=True)).transport == "polling"
    assert (await polling.wait_for("init"))["user_id"] == "user-1"
    assert (await polling.emit_ack("echo", {"n": 1}))["echo"] == {"n": 1}
    assert polling.transport == "polling"

    # Default transports: polling first, then upgrade to websocket (which may complete before or
    # after the namespace "connect", so only the upgrade itself is asserted).
    upgrading = await js.connect("up", server.url, query={"token": "user-2"}, **FAST_RECONNECT)
    assert (await upgrading.wait_for("init"))["user_id"] == "user-2"
    assert (await upgrading.wait_for("upgrade", timeout=10)) == {"transport": "websocket"}
    assert upgrading.transport == "websocket"
    assert (await upgrading.emit_ack("echo", {"n": 2}))["echo"] == {"n": 2}
    assert (await upgrading.status())["transport"] == "websocket"


@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_refused_connection_reports_code_and_message(server, js, transport):
    sock = await js.connect("anon", server.url, transports=[transport], **FAST_RECONNECT)
    err = await sock.wait_for("connect_error", timeout=10)
    assert err["message"] == "unauthorized"
    assert err["data"] == {"code": "unauthorized", "message": "token missing"}
    assert not sock.connected and sock.events("connect") == []
    # A refusal by the server is final: the client does not retry it.
    await sock.assert_no_event("reconnect_attempt", within=0.5)
    assert (await sock.status())["active"] is False


async def test_single_argument_refusal_carries_no_data(server, js):
    """Pins python-socketio behaviour that servers must know: ConnectionRefusedError(dict)
    sends str(dict) as the message and no data; use ConnectionRefusedError(message, data)."""
    sock = await js.connect("anon", server.url, transports=["websocket"], query={"refusal": "single-arg"})
    err = await sock.wait_for("connect_error")
    assert err["data"] is None
    assert "unauthorized" in err["message"]


async def test_auth_object_and_query_reach_the_server(server, js):
    sock = await js.connect("tab1", server.url, transports=["websocket"],
                            query={"content-language": "ko-KR"},
                            auth={"token": "user-7", "lang": "ko", "since": "n-41"}, **FAST_RECONNECT)
    init = await sock.wait_for("init")
    assert init["user_id"] == "user-7"
    assert init["auth"] == {"token": "user-7", "lang": "ko", "since": "n-41"}
    assert init["since"] == "n-41"
    assert init["query"]["content-language"] == "ko-KR"
    hs = server.handshakes[-1]
    assert hs["auth"] == {"token": "user-7", "lang": "ko", "since": "n-41"}
    assert hs["query"]["content-language"] == "ko-KR"
    assert hs["query"]["EIO"] == "4"


async def test_server_events_are_logged_in_order_and_consumed_by_cursor(server, js):
    sock = await js.connect("tab1", server.url, transports=["websocket"], query={"token": "user-1"})
    init = await sock.wait_for("init")
    for i in range(1, 6):
        await server.emit_to(init["sid"], "notification", {"id": f"n{i}", "title": f"#{i}"})
    assert (await sock.wait_for("notification"))["id"] == "n1"
    assert (await sock.wait_for("notification"))["id"] == "n2"
    # A predicate skips non-matching events; the cursor moves past the match.
    assert (await sock.wait_for("notification", predicate=lambda n: n["id"] == "n4"))["id"] == "n4"
    assert (await sock.wait_for("notification"))["id"] == "n5"
    assert [n["id"] for n in sock.events("notification")] == ["n1", "n2", "n3", "n4", "n5"]
    with pytest.raises(TimeoutError, match="notification"):
        await sock.wait_for("notification", timeout=0.3)
    # Several arguments and unicode survive the trip.
    await server.sio.emit("pair", ("첫째", {"b": 2}), to=init["sid"], namespace=NS)
    pair = await sock.wait_for("pair", full=True)
    assert pair.data == "첫째" and pair.args == ["첫째", {"b": 2}]


async def test_tabs_are_independent_connections(server, js):
    a = await js.connect("tab-a", server.url, transports=["websocket"], query={"token": "user-1"})
    b = await js.connect("tab-b", server.url, transports=["websocket"], query={"token": "user-1"})
    init_a, init_b = await a.wait_for("init"), await b.wait_for("init")
    assert init_a["sid"] != init_b["sid"] and a.engine_id != b.engine_id
    await server.emit_to(init_a["sid"], "notification", {"id": "only-a"})
    assert (await a.wait_for("notification"))["id"] == "only-a"
    await b.assert_no_event("notification", within=0.3)


async def test_fire_and_forget_emit_and_ack_timeout(server, js):
    sock = await js.connect("tab1", server.url, transports=["websocket"], query={"token": "user-1"})
    await sock.wait_for("init")
    await sock.emit("note", {"hello": "world"})
    assert (await sock.emit_ack("echo", "after-note"))["echo"] == "after-note"  # ordered after it
    assert ("note", {"hello": "world"}) in server.received
    with pytest.raises(JsAckTimeout):
        await sock.emit_ack("hang", {}, timeout=0.5)
    assert (await sock.emit_ack("echo", 1))["echo"] == 1


async def test_reconnects_after_engine_drop_with_updated_auth(server, js):
    sock = await js.connect("tab1", server.url, transports=["websocket"],
                            auth={"token": "user-1", "since": None}, **FAST_RECONNECT)
    first = await sock.wait_for("init")
    first_engine = sock.engine_id
    await sock.set_auth({"since": "n-9"}, merge=True)
    assert await sock.set_query({"content-language": "en"}) == {"content-language": "en"}

    await server.drop_engine(first["sid"])

    gone = await sock.wait_for("disconnect")
    assert gone["reason"] == "transport close"
    assert (await sock.wait_for("reconnect_attempt"))["attempt"] >= 1
    assert (await sock.wait_for("reconnect", timeout=10))["attempt"] >= 1
    again = await sock.wait_for("init", timeout=10)
    assert again["sid"] != first["sid"]
    assert again["since"] == "n-9" and again["auth"] == {"token": "user-1", "since": "n-9"}
    assert again["query"]["content-language"] == "en"
    # Events the server emits inside its connect handler reach the client's listeners just
    # before its "connect" event.
    await sock.wait_for("connect", predicate=lambda c: c["sid"] == again["sid"])
    assert sock.connected and sock.sid == again["sid"]
    assert sock.engine_id and sock.engine_id != first_engine
    assert (await sock.emit_ack("echo", "back"))["echo"] == "back"


@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_reconnects_after_server_restart(server, js, transport):
    sock = await js.connect("tab1", server.url, transports=[transport], query={"token": "user-1"},
                            **FAST_RECONNECT)
    await sock.wait_for("init")

    await server.stop()
    gone = await sock.wait_for("disconnect", timeout=10)
    assert gone["reason"] in ("transport close", "transport error", "ping timeout")
    # While the server is down the client keeps trying.
    await sock.wait_for("reconnect_attempt", timeout=10)
    await sock.wait_for("reconnect_error", timeout=10)

    await server.restart()
    reconnect = await sock.wait_for("reconnect", timeout=15)
    assert reconnect["attempt"] >= 1
    init = await sock.wait_for("init", timeout=10)
    assert init["user_id"] == "user-1"
    assert (await sock.wait_for("connect", full=True)).transport == transport
    assert (await sock.emit_ack("echo", "ok"))["echo"] == "ok"


async def test_client_disconnect_is_not_retried_until_reopened(server, js):
    sock = await js.connect("tab1", server.url, transports=["websocket"], query={"token": "user-1"},
                            **FAST_RECONNECT)
    await sock.wait_for("init")
    await sock.disconnect()
    assert (await sock.wait_for("disconnect"))["reason"] == "io client disconnect"
    await sock.assert_no_event("reconnect_attempt", within=0.5)
    await sock.open()
    assert (await sock.wait_for("init"))["user_id"] == "user-1"


async def test_client_side_drop_reconnects(server, js):
    sock = await js.connect("tab1", server.url, transports=["websocket"], query={"token": "user-1"},
                            **FAST_RECONNECT)
    await sock.wait_for("init")
    await sock.drop()
    assert (await sock.wait_for("disconnect"))["reason"] == "transport close"
    await sock.wait_for("reconnect")
    await sock.wait_for("init")


async def test_bad_commands_are_reported_and_the_bridge_survives(server, js):
    with pytest.raises(JsBridgeError, match="unknown op"):
        await js.request({"op": "bogus"})
    with pytest.raises(JsBridgeError, match="unknown socket"):
        await js.request({"op": "emit", "id": "nobody", "event": "x"})
    with pytest.raises(JsBridgeError, match="url"):
        await js.request({"op": "connect", "id": "x"})
    js.proc.stdin.write(b"this is not json\n[1,2]\n")
    await js.request({"op": "ping"})  # lines are handled in order: the errors are in by now
    assert [e["message"] for e in js.errors][-2:] == [
        js.errors[-2]["message"], "a command must be a JSON object"]
    assert js.errors[-2]["message"].startswith("invalid JSON")
    with pytest.raises(TypeError):
        await js.connect("x", server.url, no_such_option=1)
    sock = await js.connect("tab1", server.url, transports=["websocket"], query={"token": "user-1"})
    assert (await sock.wait_for("init"))["user_id"] == "user-1"
    with pytest.raises(JsBridgeError, match="in use"):
        await js.request({"op": "connect", "id": "tab1", "url": server.url})


async def test_bridge_close_ends_the_node_process(server):
    bridge = JsBridge()
    await bridge.start()
    sock = await bridge.connect("tab1", server.url, transports=["websocket"], query={"token": "user-1"})
    await sock.wait_for("init")
    proc = bridge.proc
    await bridge.close()
    assert proc.returncode == 0
    assert bridge.dead
    with pytest.raises(JsBridgeError):
        await sock.emit_ack("echo", 1)
    with pytest.raises(JsBridgeError):  # waiting on a dead bridge fails at once
        await sock.wait_for("init", timeout=5)
    await bridge.close()  # idempotent


async def test_a_bridge_that_does_not_exit_is_killed(tmp_path):
    stubborn = tmp_path / "stubborn.mjs"
    stubborn.write_text(
        'process.on("SIGTERM", () => {});\n'
        'process.stdin.on("data", () => {});\n'
        'process.stdin.on("end", () => {});\n'
        'console.log(JSON.stringify({type: "ready", pid: process.pid}));\n'
        'setInterval(() => {}, 1000);\n'
    )
    bridge = JsBridge(script=stubborn)
    await bridge.start()
    proc = bridge.proc
    await bridge.close(timeout=1)
    assert proc.returncode is not None and proc.returncode != 0  # killed


async def test_node_stderr_is_surfaced_when_the_bridge_dies(tmp_path):
    dying = tmp_path / "dying.mjs"
    dying.write_text(
        'console.log(JSON.stringify({type: "ready", pid: process.pid}));\n'
        'process.stdin.once("data", () => { console.error("boom: something broke"); process.exit(3); });\n'
    )
    log_file = tmp_path / "node.log"
    async with JsBridge(script=dying, stderr_log=log_file) as bridge:
        with pytest.raises(JsBridgeError, match="boom: something broke"):
            await bridge.request({"op": "ping"})
    assert bridge.proc.returncode == 3
    assert "boom: something broke" in log_file.read_text()
