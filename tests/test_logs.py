"""Tokens never reach a log: the query string carries a JWT, so every log redacts it."""
import re

from shared.logs import redact

JWT = re.compile(r"eyJ[\w-]{5,}\.[\w-]{5,}\.[\w-]+")


def test_redact():
    token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1MSJ9.abcdefSIG"
    line = f'GET /socket.io/?EIO=4&token={token}&content-language=ko Authorization: Bearer {token}'
    out = redact(line)
    assert token not in out and "content-language=ko" in out and out.count("[redacted]") == 2


async def test_no_log_of_the_stack_contains_a_token(hub, js, stack):
    user = hub.new_user()
    token = hub.token(user)
    # Tokens in the query on both transports, in auth, in headers, valid and refused.
    for i, transports in enumerate((["polling", "websocket"], ["websocket"], ["polling"])):
        sock = await js.connect(f"q{i}", hub.socket_url, transports=transports,
                                query={"token": token, "content-language": "ko"})
        await sock.wait_for("init")
    bad = await js.connect("bad", hub.socket_url, transports=["polling"],
                           query={"token": token[:-4] + "AAAA"}, reconnection=False)
    await bad.wait_for("connect_error")
    await hub.request("GET", f"/v1/me/notifications?token={token}", token=token)
    await hub.request("GET", "/v1/me/notifications", headers={"Authorization": f"Bearer {token}x"})
    await hub.publish([user], "post.liked")
    await js.sockets["q0"].wait_for("notification")

    logs = sorted(p for p in stack.state_dir.rglob("*.log") if p.is_file())
    names = {p.name for p in logs}
    assert {"api.log", "w0.log", "w1.log", "access.log"} <= names, names
    access = (stack.nginx.access_log).read_text()
    assert "/socket.io/" in access and "/v1/me/notifications" in access  # the traffic was logged
    for path in logs:
        text = path.read_text(errors="replace")
        assert token not in text, f"{path} contains a user token"
        assert not JWT.search(text), f"{path} contains something shaped like a JWT"
        assert "token=eyJ" not in text
