"""Pages and browser assets the API serves from its own origin (no CDN at run time)."""
from __future__ import annotations

import pathlib

from aiohttp import web

from shared.errors import NotFound, Unavailable

STATIC_DIR = pathlib.Path(__file__).with_name("static")
DASHBOARD_DIR = STATIC_DIR / "dashboard"
# Pinned npm packages (api_server/assets/package.json), installed by `make install`.
VENDOR_DIR = pathlib.Path(__file__).with_name("assets") / "node_modules"
VENDOR_PACKAGES = ("swagger-ui-dist", "socket.io-client")
_TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html; charset=utf-8", ".png": "image/png",
          ".map": "application/json", ".svg": "image/svg+xml"}


def _file(base: pathlib.Path, relative: str) -> web.FileResponse:
    try:
        path = (base / relative).resolve()
        # Only files inside base, never a path that climbs out of it.
        found = path.is_relative_to(base.resolve()) and path.is_file() and path.suffix in _TYPES
    except (OSError, ValueError):  # a name too long for the file system, or holding NUL
        found = False
    if not found:
        raise NotFound("no such file")
    return web.FileResponse(path, headers={"Content-Type": _TYPES[path.suffix],
                                           "Cache-Control": "public, max-age=3600"})


async def docs_page(request: web.Request) -> web.FileResponse:
    """GET /docs: Swagger UI over /openapi.json."""
    if not (VENDOR_DIR / "swagger-ui-dist").is_dir():
        raise Unavailable("the documentation assets are not installed: run make install")
    return _file(STATIC_DIR, "docs.html")


async def docs_file(request: web.Request) -> web.FileResponse:
    """Our own small scripts and pages."""
    return _file(STATIC_DIR, request.match_info["name"])


async def dashboard_page(request: web.Request) -> web.FileResponse:
    """GET /dashboard/: the instructor dashboard, a Socket.IO client of the hub."""
    if not (VENDOR_DIR / "socket.io-client").is_dir():
        raise Unavailable("the dashboard assets are not installed: run make install")
    return _file(DASHBOARD_DIR, "index.html")


async def dashboard_file(request: web.Request) -> web.FileResponse:
    """The dashboard's scripts and styles."""
    return _file(DASHBOARD_DIR, request.match_info["name"])


async def dashboard_redirect(request: web.Request) -> web.Response:
    raise web.HTTPMovedPermanently("/dashboard/" + (f"?{request.query_string}" if request.query_string else ""))


async def vendor_file(request: web.Request) -> web.FileResponse:
    """A file of one of the pinned npm packages."""
    package = request.match_info["package"]
    if package not in VENDOR_PACKAGES:
        raise NotFound("no such package")
    return _file(VENDOR_DIR / package, request.match_info["path"])


def setup_static(app: web.Application) -> None:
    """Register /docs, /dashboard/ and their assets."""
    app.router.add_get("/docs", docs_page)
    app.router.add_get("/docs/", docs_page)
    app.router.add_get("/docs/{name}", docs_file)
    app.router.add_get("/dashboard", dashboard_redirect)
    app.router.add_get("/dashboard/", dashboard_page)
    app.router.add_get("/dashboard/{name}", dashboard_file)
    app.router.add_get("/vendor/{package}/{path:.+}", vendor_file)
