"""The playground page at `/` and its assets under `/static/`.

No build step and no CDN: three hand-written files shipped inside the package, served as they are.
The page carries no inline script, so it runs under the strict CSP the middleware gives it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import urlsplit

from fastapi import APIRouter
from fastapi.responses import FileResponse

from backend.auth import devlogin
from backend.auth.devkeys import load_or_create_dev_key
from backend.core.config import Settings
from backend.core.errors import NotFound
from backend.web import devtoken

STATIC_DIR = Path(__file__).resolve().parent / "static"
ASSETS = {
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
    "icon.svg": "image/svg+xml",
}
"""The only files served under `/static/`: a fixed list, so no path ever reaches the disk."""


async def page() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html; charset=utf-8")


async def asset(name: str) -> FileResponse:
    media_type = ASSETS.get(name)
    if media_type is None:
        raise NotFound()
    return FileResponse(STATIC_DIR / name, media_type=media_type)


def build_router(settings: Settings) -> APIRouter:
    """The page and its assets; in development auth mode, the development token endpoint too."""
    router = APIRouter()
    router.add_api_route("/", page, methods=["GET"], include_in_schema=False)
    router.add_api_route("/static/{name}", asset, methods=["GET"], include_in_schema=False)
    if settings.dev_auth:
        router.include_router(devtoken.router)
    return router


def log_addresses(settings: Settings, log: logging.Logger) -> None:
    """The start log's addresses: the playground's (in development auth mode with this start's
    login secret, at WARNING so it shows at every LOG_LEVEL) and the API documentation's."""
    base = devlogin.start_address()
    if not settings.dev_auth:
        log.info("playground: %s/ (sign in with a bearer token); API docs: %s/docs", base, base)
        return
    secret = devlogin.login_secret(load_or_create_dev_key(settings.data_dir))
    loopback = devlogin.is_loopback(urlsplit(base).hostname)
    log.warning(
        "playground: %s (development sign-in, with this start's secret: open it in a browser on "
        "this machine%s); API docs: %s/docs",
        devlogin.login_url(base, secret),
        "" if loopback else "; it answers only on a loopback address",
        base,
    )
