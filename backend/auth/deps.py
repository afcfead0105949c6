"""The `CurrentUser` dependency: the verified caller of every `/api/*` route."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from backend.auth.verifier import TokenVerifier, User
from backend.deps import app_state
from backend.errors import MissingToken

# auto_error=False: we raise our own 401 with the standard error body and WWW-Authenticate.
bearer_scheme = HTTPBearer(auto_error=False, description="A Better Auth JWT (or HS256 / dev token)")


async def current_user(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> User:
    if credentials is None or not credentials.credentials.strip():
        raise MissingToken()
    verifier: TokenVerifier = app_state(request).verifier
    user = await verifier.verify(credentials.credentials.strip())
    request.state.user_id = user.id  # for the access log
    return user


CurrentUser = Annotated[User, Depends(current_user)]
