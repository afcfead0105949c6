"""Authentication: Better Auth JWT (JWKS), HS256 shared-secret and development-key verification."""

from backend.auth.deps import CurrentUser, current_user
from backend.auth.verifier import TokenVerifier, User

__all__ = ["CurrentUser", "TokenVerifier", "User", "current_user"]
