"""The /notifications namespace: handshake authentication and acknowledged events."""
from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

import socketio
from redis.exceptions import RedisError

from shared import metrics
from shared.errors import (HubError, InternalError, InvalidRequest, RateLimited, TooManyConnections, Unavailable,
                           UnknownEvent)
from shared.i18n import Renderer, negotiate
from shared.ids import parse_id, parse_ids
from shared.presence import USER_ROOM, Presence
from shared.ratelimit import LocalLimiter, RedisLimiter
from shared.runtime import services_fault
from shared.service import NotificationService
from shared.tokens import TokenVerifier
from shared.web import client_address

from .engine import close_session, engine_socket
from .hub import Connection, Hub

logger = logging.getLogger(__name__)

NAMESPACE = "/notifications"

# Never a client event, whatever handlers exist: the server's own lifecycle events and the
# names socket.io-client reserves for itself.
RESERVED_EVENTS = frozenset({"connect", "connect_error", "disconnect", "disconnecting",
                             "newListener", "removeListener"})


def _first(query: dict[str, list[str]], *names: str) -> str | None:
    for name in names:
        values = query.get(name)
        if values:
            return values[0]
    return None


def acknowledged(handler: Callable[..., Awaitable[dict[str, Any]]]) -> Callable[..., Awaitable[dict[str, Any]]]:
    """Answer through the acknowledgement: ``{ok: true, …}`` or ``{ok: false, error}``."""

    @functools.wraps(handler)
    async def wrapper(self: "NotificationsNamespace", sid: str, data: Any = None, *extra: Any) -> dict[str, Any]:
        try:
            conn = self.hub.connection(sid)
            if conn is None:
                raise HubError("this socket is not connected", code="unauthorized")
            return {"ok": True, **await handler(self, conn, data)}
        except HubError as exc:
            return {"ok": False, **exc.to_dict()}
        except Exception as exc:
            if services_fault(exc):
                logger.warning("a backing service failed during %s: %s", handler.__name__, exc)
                return {"ok": False, **Unavailable("a backing service is unavailable; try again").to_dict()}
            # A defect: log it in full; the client still gets its answer and keeps its socket.
            logger.exception("%s failed", handler.__name__)
            return {"ok": False, **InternalError("an internal error occurred").to_dict()}

    return wrapper


async def reconnect(server: socketio.AsyncServer, sid: str) -> None:
    """Close the connection of socket ``sid`` so that its client reconnects (and replays with
    ``since``). A namespace disconnect would not do: socket.io-client never reconnects after an
    "io server disconnect"; after a closed transport it does, with its back-off."""
    socket = engine_socket(server, sid, NAMESPACE)
    if socket is not None:
        await close_session(server.eio, socket.sid)


@dataclasses.dataclass(frozen=True, slots=True)
class SocketLimits:
    """A worker's rate limits: handshakes per client address and per user (shared in Redis, so
    that a client cannot spread its handshakes over workers), events per socket (local)."""

    handshakes_per_address: RedisLimiter
    handshakes_per_user: RedisLimiter
    events: LocalLimiter
    trusted_proxies: tuple[Any, ...]


class NotificationsNamespace(socketio.AsyncNamespace):
    """Authenticates sockets, hands them to the hub, and serves their requests.

    Every client event counts against the socket's limit (NOTIHUB_SOCKET_RATE_LIMIT) before any
    handler runs; past it the event is answered ``rate_limited``, and a socket that sends as many
    refused events in a row as its whole allowance is disconnected (a namespace disconnect:
    socket.io-client does not come back by itself).
    """

    def __init__(self, *, hub: Hub, service: NotificationService, verifier: TokenVerifier,
                 renderer: Renderer, presence: Presence, default_lang: str, limits: SocketLimits) -> None:
        super().__init__(NAMESPACE)
        self.hub = hub
        self.service = service
        self.verifier = verifier
        self.renderer = renderer
        self.presence = presence
        self.default_lang = default_lang
        self.limits = limits
        # Events refused in a row, per socket.
        self._refused: dict[str, int] = {}

    async def trigger_event(self, event: Any, *args: Any) -> Any:
        """Call ``on_<event>`` for the server's own connect and disconnect, and for client events
        that have a handler; any other event (``connect`` sent by a client, say) calls nothing
        and is answered ``{ok: false, error: {code: "unknown_event"}}``."""
        if event in ("connect", "disconnect") and self._called_by_server(event, args):
            return await super().trigger_event(event, *args)
        sid = args[0] if args else None
        refused = await self._over_limit(sid)
        if refused is not None:
            return refused
        if (isinstance(event, str) and event not in RESERVED_EVENTS
                and callable(getattr(self, f"on_{event}", None))):
            return await super().trigger_event(event, *args)
        logger.debug("refused the event %.80r of socket %s", event, args[0] if args else None)
        return {"ok": False, **UnknownEvent(f"there is no event {event!r:.80}").to_dict()}

    async def _over_limit(self, sid: Any) -> dict[str, Any] | None:
        # The answer for an event past the socket's limit; None when it may go on.
        verdict = self.limits.events.hit(sid)
        if verdict.allowed:
            self._refused.pop(sid, None)
            return None
        metrics.RATE_LIMITED.labels("socket_events").inc()
        refused = self._refused[sid] = self._refused.get(sid, 0) + 1
        if refused == self.limits.events.rate.count:
            logger.info("disconnecting socket %s: it goes on sending past its limit", sid)
            metrics.FLOODERS_DISCONNECTED.inc()
            self.server.start_background_task(self.server.disconnect, sid, namespace=NAMESPACE)
        return {"ok": False, **verdict.refusal("events").to_dict()}

    def _called_by_server(self, event: str, args: tuple[Any, ...]) -> bool:
        # python-socketio routes the server's own connect/disconnect and a client's event of the
        # same name through trigger_event alike; what tells them apart is state a client cannot
        # forge.
        sid = args[0] if args else None
        if event == "connect":
            # The handshake passes the very environ the server keeps for the connection; an
            # event can only carry an object decoded from JSON.
            environ = self.server.get_environ(sid, NAMESPACE)
            return environ is not None and len(args) > 1 and args[1] is environ
        # The server marks a socket as disconnecting before calling on_disconnect, and
        # dispatches events only for connected sockets. (An event racing a real disconnect
        # can pass here, but on_disconnect does nothing twice.)
        return sid in self.server.manager.pending_disconnect.get(NAMESPACE, ())

    def _open(self, sid: str) -> bool:
        # Whether the client is still there: it may leave while the handshake awaits Redis, and
        # then no disconnect handler runs for it (the socket is not connected yet).
        socket = engine_socket(self.server, sid, NAMESPACE)
        return socket is not None and not socket.closed and not socket.closing

    async def on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        """Refuse with ``{code, message}``, or attach the socket and start its sync."""
        query = parse_qs(environ.get("QUERY_STRING", ""))
        auth = auth if isinstance(auth, dict) else {}
        token = auth.get("token") or _first(query, "token")
        requested = auth.get("lang") or _first(query, "content-language", "lang")
        lang = (self.renderer.language(requested) if requested
                else negotiate(environ.get("HTTP_ACCEPT_LANGUAGE"), self.default_lang))
        since_raw = auth.get("since") or _first(query, "since")
        request = environ.get("aiohttp.request")
        address = client_address(request.remote if request is not None else None,
                                 environ.get("HTTP_X_FORWARDED_FOR"), self.limits.trusted_proxies)
        try:
            if address is not None:
                verdict = await self.limits.handshakes_per_address.hit(address[:64])
                if not verdict.allowed:
                    raise verdict.refusal("connections from this address")
            user = self.verifier.verify(token)
            verdict = await self.limits.handshakes_per_user.hit(user.id)
            if not verdict.allowed:
                raise verdict.refusal("connections of this user")
            try:
                # The lease is written here, before the sync reads the snapshot: a commit the
                # snapshot misses finds this worker when it is announced (shared/bus.py).
                admitted = await self.presence.admit(user.id, sid)
            except (RedisError, OSError) as exc:
                # A refusal would be final for the client (it never retries one), and Redis may
                # be back in a moment: admit the socket uncounted rather than lock the user out.
                # Its lease is written by the worker's next refresh; until then the position
                # check brings it what announcements could not.
                logger.warning("could not count the connections of a user; admitting uncounted: %s", exc)
                admitted = True
            if not admitted:
                raise TooManyConnections("this user has too many open connections")
        except HubError as exc:
            metrics.CONNECTS_REFUSED.labels(exc.code).inc()
            data: dict[str, Any] = {"code": exc.code, "message": exc.message}
            if isinstance(exc, RateLimited):
                data["retry_after"] = exc.retry_after
            raise socketio.exceptions.ConnectionRefusedError(exc.message, data)
        if not self._open(sid):
            # Gone during the handshake: count it no more, and attach nothing.
            await self._release(user.id, sid)
            return False
        since, since_error = None, None
        if since_raw is not None:
            try:
                since = parse_id(since_raw, field="since")
            except InvalidRequest:
                since_error = "invalid_since"
        await self.enter_room(sid, f"{USER_ROOM}{user.id}")
        conn = self.hub.attach(sid, user=user.id, lang=lang)
        if user.expires_at is not None:
            # The token is checked once, at the handshake: the socket lives no longer than it.
            delay = max(0.0, user.expires_at - time.time())
            conn.expiry = asyncio.get_running_loop().call_later(
                delay, self.server.start_background_task, self._session_expired, sid)
        # After this handler returns the server sends CONNECT; the sync's first emit
        # (after a MongoDB read) always follows it.
        self.server.start_background_task(self._sync, conn, since, since_error)

    async def _sync(self, conn, since, since_error) -> None:
        try:
            await self.hub.sync(conn, since=since, since_error=since_error)
        except Exception:
            logger.exception("sync failed; closing socket %s so that it reconnects", conn.sid)
            await reconnect(self.server, conn.sid)

    async def _session_expired(self, sid: str) -> None:
        """Tell the socket its token expired, then disconnect it at the namespace: socket.io-client
        does not reconnect by itself after that; the app sets a fresh token in ``socket.auth``
        and calls ``connect()``, and its ``since`` replays what it missed meanwhile."""
        if self.hub.connection(sid) is None:
            return
        metrics.SESSIONS_EXPIRED.inc()
        await self.emit("session_expired", {}, to=sid)
        await self.server.disconnect(sid, namespace=NAMESPACE)

    async def on_disconnect(self, sid: str, reason: Any = None) -> None:
        self.limits.events.forget(sid)
        self._refused.pop(sid, None)
        conn = self.hub.detach(sid)
        if conn is not None:
            await self._release(conn.user, sid)

    async def _release(self, user: str, sid: str) -> None:
        try:
            await self.presence.release(user, sid)
        except (RedisError, OSError) as exc:
            # Its lease runs out by itself: the count is right again within LEASE_SECONDS.
            logger.warning("could not release the lease of socket %s: %s", sid, exc)

    @acknowledged
    async def on_mark_read(self, conn: Connection, data: Any) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise InvalidRequest("send {ids: [...]}")
        ids = parse_ids(data.get("ids"))
        return {"unread_count": await self.service.mark_read(conn.user, ids)}

    @acknowledged
    async def on_mark_all_read(self, conn: Connection, data: Any) -> dict[str, Any]:
        if data is not None and not isinstance(data, dict):
            raise InvalidRequest("send {} or nothing")
        return {"unread_count": await self.service.mark_all_read(conn.user)}

    @acknowledged
    async def on_list(self, conn: Connection, data: Any) -> dict[str, Any]:
        data = {} if data is None else data
        if not isinstance(data, dict):
            raise InvalidRequest("send {cursor?, limit?, unread_only?}")
        cursor, limit, unread_only = data.get("cursor"), data.get("limit"), data.get("unread_only", False)
        if cursor is not None and not isinstance(cursor, str):
            raise InvalidRequest("cursor must be a string")
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool)):
            raise InvalidRequest("limit must be a whole number")
        if not isinstance(unread_only, bool):
            raise InvalidRequest("unread_only must be true or false")
        page = await self.service.page(conn.user, cursor=cursor, limit=limit, unread_only=unread_only)
        return {"notifications": [self.renderer.render(n, conn.lang) for n in page.notifications],
                "next_cursor": page.next_cursor}
