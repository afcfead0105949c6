"""`POST /api/dev/token`: a development token for any user name, for the playground's sign-in.

It is what `task-assistant token USER` does, over HTTP, for a browser on the developer's own
machine. So it answers only when all of these hold, and is not even routed otherwise:

- the request carries the start's login secret in `X-Dev-Login` (compared in constant time):
  whatever starts the server logs the playground's address with it, `http://127.0.0.1:8000/
  ?login=<secret>`, as Jupyter does with its token; the page keeps it for the tab and sends it.
  Without it, a same-host reverse proxy (which connects over loopback, and need not add
  forwarding headers) would let anyone who reaches it sign in as anyone;

- development auth mode (neither BETTER_AUTH_URL, BETTER_AUTH_JWKS_URL nor JWT_SECRET is set);
  in any other mode the route does not exist and is absent from the OpenAPI schema;
- the connection reached the server on a loopback address (the ASGI `server` of the request);
- no proxy header (`Forwarded`, `X-Forwarded-For`, ...): a reverse proxy on the same host would
  connect over loopback too, and must not expose it;
- the `Host` header and any `Origin` header name a loopback host, so a web page elsewhere cannot
  reach it through DNS rebinding or a permissive CORS setting.

It is not a login: whoever has the secret can act as any user, which is why it also stays on
loopback.

The secret is derived, not stored: an HMAC, under the development key in DATA_DIR, of what
identifies this start of the server, so every worker of `serve --workers N` and every uvicorn
reload of one start computes the same one with no file to share, and the next start gets a new
one. `task-assistant serve` names its start with a random value in TASK_ASSISTANT_START, which its
workers inherit; a plain `uvicorn backend.main:app` is named by its process group (the shell job,
`make run`, the systemd unit or the container that started it) and the group leader's start time.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import hmac
import ipaddress
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator

from backend.auth.devkeys import DEV_TOKEN_TTL_SECONDS, load_or_create_dev_key, mint_token
from backend.core.errors import Forbidden, NotFound
from backend.web.deps import SettingsDep
from backend.web.errors import error_responses

PROXY_HEADERS = ("forwarded", "x-forwarded-for", "x-forwarded-host", "x-real-ip")
LOGIN_HEADER = "X-Dev-Login"
LOGIN_PARAM = "login"
START_ENV = "TASK_ASSISTANT_START"
"""Names one start of the server; `task-assistant serve` sets it for itself and its workers."""
ADDRESS_ENV = "TASK_ASSISTANT_ADDRESS"
"""The server's base URL, set by `task-assistant serve` for the start log."""

router = APIRouter(prefix="/api/dev", tags=["development"])


class DevTokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user: str = Field(min_length=1, max_length=255, description="The user id (`sub`) to sign for.")

    @field_validator("user")
    @classmethod
    def _printable(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        if value != value.strip():
            raise ValueError("must not start or end with spaces")
        if not value.isprintable():
            raise ValueError("must contain only printable characters (no control characters)")
        return value


class DevTokenResponse(BaseModel):
    token: str
    token_type: str = "Bearer"
    user: str
    expires_at: datetime


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return address.is_loopback


def loopback_only(request: Request) -> None:
    """Refuse (404 or 403) unless the request came straight to a loopback listener.

    A dependency, so the refusal comes before any look at the body.
    """
    server = request.scope.get("server")
    if not server or not is_loopback(str(server[0])):
        raise NotFound()
    if any(name in request.headers for name in PROXY_HEADERS):
        raise Forbidden("The development token endpoint refuses proxied requests")
    if not is_loopback(urlsplit("//" + request.headers.get("host", "")).hostname):
        raise Forbidden("The development token endpoint answers only to a loopback Host")
    origin = request.headers.get("origin")
    if origin is not None and not is_loopback(urlsplit(origin).hostname):
        raise Forbidden("The development token endpoint answers only to loopback origins")


def _process_start_time(pid: int) -> str:
    """When process `pid` started (clock ticks since boot, Linux), or "" when unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rpartition(")")[2].split()[19]  # field 22; the name before ")" may hold spaces


@functools.cache
def start_id() -> str:
    """What names this start of the server (fixed for the life of the process): see above."""
    named = os.environ.get(START_ENV)
    if named:
        return "serve:" + named
    group = os.getpgrp()
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = ""
    return f"group:{boot}:{group}:{_process_start_time(group)}"


def login_secret(key: Ed25519PrivateKey, start: str | None = None) -> str:
    """The login secret of a start (this one by default): 24 URL-safe characters."""
    raw = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    message = b"task-assistant dev login\0" + (start or start_id()).encode()
    digest = hmac.new(raw, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:18]).decode()


def start_address() -> str:
    """The server's base URL as the developer's browser reaches it, for the start log.

    `task-assistant serve` says it in TASK_ASSISTANT_ADDRESS; under `uvicorn` it is read from the
    command line (`--host`, `--port`, or UVICORN_HOST/UVICORN_PORT), else uvicorn's default. A
    wildcard host (`0.0.0.0`, `::`) is shown as the loopback address.
    """
    named = os.environ.get(ADDRESS_ENV)
    if named:
        return named.rstrip("/")
    host = os.environ.get("UVICORN_HOST", "127.0.0.1")
    port = os.environ.get("UVICORN_PORT", "8000")
    argv = sys.argv
    program = Path(argv[0]).as_posix() if argv else ""
    if program == "uvicorn" or program.endswith(("/uvicorn", "uvicorn/__main__.py")):
        for i, arg in enumerate(argv):
            for option in ("--host", "--port"):
                value = None
                if arg == option and i + 1 < len(argv):
                    value = argv[i + 1]
                elif arg.startswith(option + "="):
                    value = arg.partition("=")[2]
                if value is not None and option == "--host":
                    host = value
                elif value is not None:
                    port = value
    return base_url(host, int(port) if port.isdigit() else 8000)


def base_url(host: str, port: int) -> str:
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host.strip('[]')}]"
    return f"http://{host}:{port}"


def login_url(base: str, secret: str) -> str:
    return f"{base}/?{LOGIN_PARAM}={secret}"


def secret_matches(given: str | None, expected: str) -> bool:
    """Constant-time comparison (as bytes: `compare_digest` refuses non-ASCII text)."""
    return given is not None and hmac.compare_digest(
        given.encode("utf-8", "surrogateescape"), expected.encode()
    )


async def login_required(request: Request, settings: SettingsDep) -> None:
    """Refuse (403) unless `X-Dev-Login` carries this start's secret; before the body is read."""
    key = await asyncio.to_thread(load_or_create_dev_key, settings.data_dir)
    if not secret_matches(request.headers.get(LOGIN_HEADER), login_secret(key)):
        raise Forbidden(
            "Development sign-in needs this start's login secret: open the playground at the "
            "address the server printed when it started (…/?login=…)"
        )


@router.post(
    "/token",
    response_model=DevTokenResponse,
    responses=error_responses(400, 403, 404, 413, 422),
    dependencies=[Depends(loopback_only), Depends(login_required)],
)
async def dev_token(body: DevTokenRequest, settings: SettingsDep) -> DevTokenResponse:
    """Development auth mode only, on loopback only, with the login secret the server printed at
    start in `X-Dev-Login`: sign a token for `user` with the development key."""
    key = await asyncio.to_thread(load_or_create_dev_key, settings.data_dir)
    token = mint_token(key, body.user, ttl_seconds=DEV_TOKEN_TTL_SECONDS)
    exp = jwt.decode(token, options={"verify_signature": False})["exp"]
    return DevTokenResponse(
        token=token, user=body.user, expires_at=datetime.fromtimestamp(exp, UTC)
    )
