"""The composed stack: sticky polling through nginx, and a socket worker that dies and comes back."""

from __future__ import annotations

import json
import urllib.request

from devstack.stack import Stack


def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.status, resp.read().decode()


def _post(url: str, body: bytes) -> int:
    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "text/plain;charset=UTF-8"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.status


def _handshake(base: str) -> str:
    """Open an Engine.IO polling session through nginx and return its sid."""
    status, body = _get(f"{base}/socket.io/?EIO=4&transport=polling")
    assert status == 200 and body.startswith("0")
    return json.loads(body[1:])["sid"]


def test_polling_session_sticks_to_its_worker(stack: Stack) -> None:
    sids = [_handshake(stack.public_url) for _ in range(4)]
    assert {sid.split(".", 1)[0] for sid in sids} == set(stack.worker_ids)
    for sid in sids:
        # A follow-up request must reach the worker that owns the session: any other one
        # answers 400 (unknown session). The Socket.IO CONNECT packet makes the poll return at once.
        url = f"{stack.public_url}/socket.io/?EIO=4&transport=polling&sid={sid}"
        assert _post(url, b"40/notifications,") == 200
        status, body = _get(url)
        assert status == 200 and body.startswith("4")


def test_dead_worker_is_skipped_then_restarted(stack: Stack) -> None:
    old_pid = stack.workers["w0"].pid
    stack.kill_worker("w0")
    try:
        assert not stack.workers["w0"].alive
        owners = {_handshake(stack.public_url).split(".", 1)[0] for _ in range(4)}
        assert owners == {"w1"}
    finally:
        stack.restart_worker("w0")
    assert stack.workers["w0"].alive and stack.workers["w0"].pid != old_pid
    assert _get(f"{stack.worker_urls['w0']}/healthz")[0] == 200
