"""The web dashboard: static files packaged with the API, served at `/`.

The page holds no key of its own: it asks for an API key and calls the same `/v1` routes as
any client, so these routes need none. They stay out of the OpenAPI schema (not part of v1).
"""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter
from fastapi.responses import Response

from orchestrator.errors import NotFound

router = APIRouter(include_in_schema=False)

ASSETS = resources.files("services.api") / "dashboard"
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}
# Everything the page loads comes from this server: a script or style from anywhere else, a
# form posted elsewhere or the page framed by another site is refused by the browser.
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data: blob:; object-src 'none'; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Revalidated on each load, so an upgraded server never runs an old script.
    "Cache-Control": "no-cache",
}


def _asset(name: str) -> Response:
    suffix = name[name.rfind(".") :] if "." in name else ""
    entry = ASSETS / name
    # Only plain names with a known type: no path ever leaves the dashboard folder.
    if "/" in name or "\\" in name or suffix not in MEDIA_TYPES or not entry.is_file():
        raise NotFound(f"no dashboard file {name!r}", param="name")
    return Response(entry.read_bytes(), media_type=MEDIA_TYPES[suffix], headers=HEADERS)


@router.get("/")
def dashboard() -> Response:
    """The dashboard's page."""
    return _asset("index.html")


@router.get("/dashboard/{name}")
def dashboard_asset(name: str) -> Response:
    """A script or style sheet of the dashboard."""
    return _asset(name)
