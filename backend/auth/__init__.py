"""Authentication: Better Auth JWT (JWKS), HS256 shared-secret and development-key verification."""
