"""Free TCP ports on the loopback interface."""

from __future__ import annotations

import random
import socket


def port_free(port: int) -> bool:
    """Return True when nothing is bound to 127.0.0.1:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def free_port_run(n: int = 1) -> int:
    """The first of ``n`` consecutive free ports on 127.0.0.1.

    They come from below the kernel's ephemeral range (32768 and up), so no outgoing
    connection can take one between now and the moment a server binds it.
    """
    for _ in range(200):
        base = random.randrange(20000, 32000 - n)
        if all(port_free(base + i) for i in range(n)):
            return base
    raise RuntimeError(f"no run of {n} free ports")


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    return free_port_run(1)


def port_accepts(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    """Return True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
