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

The secret itself (how it is derived, what names a start) is `backend.auth.devlogin`.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from urllib.parse import urlsplit

import jwt
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator

from backend.auth.devkeys import DEV_TOKEN_TTL_SECONDS, load_or_create_dev_key, mint_token
from backend.auth.devlogin import is_loopback, login_secret, secret_matches
from backend.core.errors import Forbidden, NotFound
from backend.web.deps import SettingsDep
from backend.web.errors import error_responses

PROXY_HEADERS = ("forwarded", "x-forwarded-for", "x-forwarded-host", "x-real-ip")
LOGIN_HEADER = "X-Dev-Login"
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


async def loopback_only(request: Request) -> None:
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
