"""Browser-facing safety of the API: security headers and CORS."""
from __future__ import annotations

import aiohttp_cors
from aiohttp import web


# The dashboard and the API documentation load scripts and styles from this origin only (no
# inline code, no CDN); sockets connect to the same origin.
CONTENT_SECURITY_POLICY = "; ".join((
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "connect-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "frame-ancestors 'none'",
    "form-action 'self'",
))
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    # A dashboard address may carry ?token=… for a moment: never sent on to another site.
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
# Headers a page on an allowed origin may read from the API's answers.
EXPOSED_HEADERS = ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset", "Retry-After")


async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: the same headers on every answer, errors and files included."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)


def setup_cors(app: web.Application, origins: tuple[str, ...]) -> None:
    """Let pages on NOTIHUB_CORS_ORIGINS call the API (``*``: any origin). Credentials (cookies)
    are never allowed: callers authenticate with bearer tokens, which a page sends itself."""
    if not origins:
        return  # same origin only: the browser's default
    options = aiohttp_cors.ResourceOptions(
        allow_credentials=False,
        expose_headers=EXPOSED_HEADERS,
        allow_headers=("Authorization", "Content-Type", "Accept-Language"),
        max_age=600,
    )
    cors = aiohttp_cors.setup(app, defaults={origin: options for origin in origins})
    for route in list(app.router.routes()):
        cors.add(route)
