"""The table of coded errors shared by the API, the socket workers and the ingest worker."""
from __future__ import annotations


class HubError(Exception):
    """A failure that clients see as ``{"error": {"code", "message"}}``."""

    code = "internal"
    status = 400

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def to_dict(self) -> dict[str, dict[str, str]]:
        """The contract's error shape."""
        return {"error": {"code": self.code, "message": self.message}}


class InvalidRequest(HubError):
    code = "invalid_request"
    status = 400


class InvalidJSON(InvalidRequest):
    code = "invalid_json"


class Unauthorized(HubError):
    code = "unauthorized"
    status = 401


class TokenExpired(Unauthorized):
    code = "token_expired"


class Forbidden(HubError):
    code = "forbidden"
    status = 403


class NotFound(HubError):
    code = "not_found"
    status = 404


class UnknownEvent(NotFound):
    """A socket event with no handler, or a reserved name (``connect``) sent as an event."""

    code = "unknown_event"


class MethodNotAllowed(HubError):
    code = "method_not_allowed"
    status = 405


class Conflict(HubError):
    code = "conflict"
    status = 409


class PayloadTooLarge(HubError):
    code = "payload_too_large"
    status = 413


class UnsupportedMediaType(HubError):
    code = "unsupported_media_type"
    status = 415


class RateLimited(HubError):
    """Past a rate limit: try again after ``retry_after`` seconds."""

    code = "rate_limited"
    status = 429

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TooManyConnections(HubError):
    code = "too_many_connections"
    status = 429


class Unavailable(HubError):
    """A backing service does not answer; the request may be retried."""

    code = "unavailable"
    status = 503


class Draining(Unavailable):
    """This socket worker is shutting down (a rolling deploy); another one takes the connection."""

    code = "draining"


class InternalError(HubError):
    """A defect on our side; logged in full, shown to the client only in outline."""

    code = "internal"
    status = 500
