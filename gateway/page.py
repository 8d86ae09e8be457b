"""The browser page at `/`: submit a request and watch its statuses arrive over Server-Sent Events.

Static files shipped in the package (`gateway/static/`), read once and served without auth: the
page holds no data until the user types an API key, which stays in the browser's sessionStorage
and only ever travels in the Authorization header. The Content-Security-Policy allows nothing but
this origin, so the page works offline and injected markup could neither run nor call elsewhere.
"""

from __future__ import annotations

import functools
from importlib import resources

from litestar import Response, get
from litestar.params import FromPath

from ackflow.errors import NotFound

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "connect-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}
PAGE_FILE = "index.html"
ASSETS = {  # what /static/ serves: nothing else, so no path can reach another file
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}


@functools.cache
def _read(name: str) -> bytes:
    """One of the shipped static files, read on first use and kept."""
    return (resources.files("gateway") / "static" / name).read_bytes()


@get("/", include_in_schema=False, sync_to_thread=False)
def index_page() -> Response[bytes]:
    """The page itself."""
    return Response(_read(PAGE_FILE), media_type="text/html; charset=utf-8", headers=SECURITY_HEADERS)


@get("/static/{name:str}", include_in_schema=False, sync_to_thread=False)
def static_asset(name: FromPath[str]) -> Response[bytes]:
    """The page's script, stylesheet and icon (the CSP allows only same-origin files, no inline code)."""
    media_type = ASSETS.get(name)
    if media_type is None:
        raise NotFound(f"no static file {name!r}")
    return Response(_read(name), media_type=media_type, headers=SECURITY_HEADERS)
