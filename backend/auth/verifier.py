"""Token verification: which key may verify which algorithm, and the claims we require.

Algorithm confusion is impossible by construction: HS256 is verified only with JWT_SECRET,
asymmetric algorithms only with a JWKS key whose type matches the algorithm, `none` never.

Claims we require beyond the signature: `sub` is 1-255 printable characters (no control
characters, no lone surrogates: it becomes a database key and appears in logs) that neither start
nor end with a space (` alice` would be another user than `alice`, who looks the same); `exp`, `iat` and
`nbf` are JSON numbers (not numeric strings), and `exp` is at most `max_lifetime` seconds ahead;
`iss` and `aud` match the configured values whenever those are set.
"""

from __future__ import annotations

import math
import time
from typing import Any

import jwt
from jwt import PyJWK

from backend.auth.jwks import JWKSCache, JWKSUnavailable
from backend.auth.user import User
from backend.core.errors import ServiceUnavailable, Unauthorized

# Which JWK shapes may verify which algorithm (Better Auth's jwt plugin offers these families).
_KEY_TYPES: dict[str, tuple[str, str | None]] = {
    "EdDSA": ("OKP", None),
    "ES256": ("EC", "P-256"),
    "ES384": ("EC", "P-384"),
    "ES512": ("EC", "P-521"),
    "RS256": ("RSA", None),
    "RS384": ("RSA", None),
    "RS512": ("RSA", None),
    "PS256": ("RSA", None),
    "PS384": ("RSA", None),
    "PS512": ("RSA", None),
}


class TokenVerifier:
    def __init__(
        self,
        *,
        jwks: JWKSCache | None,
        secret: str | None,
        issuer: str | None,
        audience: str | None,
        leeway: int = 30,
        unknown_key_detail: str = "Invalid token",
        max_lifetime: int = 86_400,
    ) -> None:
        self._jwks = jwks
        self._secret = secret
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway
        self._unknown_key_detail = unknown_key_detail
        """The 401 detail for a token whose `kid` no key has (development auth explains it)."""
        self._max_lifetime = max_lifetime
        self._key_objects: dict[tuple[str, str, str], Any] = {}

    async def verify(self, token: str) -> User:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthorized("Invalid token") from None
        alg = header.get("alg")
        if alg == "HS256" and self._secret:
            key: Any = self._secret
        elif isinstance(alg, str) and alg in _KEY_TYPES and self._jwks is not None:
            key = await self._asymmetric_key(alg, header.get("kid"))
        else:
            raise Unauthorized("Invalid token")
        options: dict[str, Any] = {"require": ["sub", "exp", "iat"]}
        if self._audience is None:
            options["verify_aud"] = False
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                issuer=self._issuer,
                audience=self._audience,
                leeway=self._leeway,
                options=options,  # type: ignore[arg-type]
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("Token expired") from None
        except jwt.ImmatureSignatureError:
            raise Unauthorized("Token not yet valid") from None
        except jwt.PyJWTError:
            raise Unauthorized("Invalid token") from None
        return User(id=self._check_claims(claims), claims=claims, token=token)

    def _check_claims(self, claims: dict[str, Any]) -> str:
        """The user id, once the claims PyJWT does not check strictly enough are sound."""
        for name in ("exp", "iat", "nbf"):
            value = claims.get(name)
            if name in claims and not _is_number(value):
                raise Unauthorized("Invalid token")
        if claims["exp"] > time.time() + self._max_lifetime + self._leeway:
            raise Unauthorized("Token lifetime too long")
        sub = claims.get("sub")
        if not isinstance(sub, str) or not valid_user_id(sub):
            raise Unauthorized("Invalid token")
        return sub

    async def _asymmetric_key(self, alg: str, kid: Any) -> Any:
        assert self._jwks is not None
        if kid is not None and not isinstance(kid, str):
            raise Unauthorized("Invalid token")
        try:
            jwk = await self._jwks.get(kid)
        except JWKSUnavailable:
            raise ServiceUnavailable("Authentication service unavailable") from None
        if jwk is None:
            raise Unauthorized(self._unknown_key_detail)
        kty, crv = _KEY_TYPES[alg]
        if jwk.get("kty") != kty or (crv and jwk.get("crv") != crv):
            raise Unauthorized("Invalid token")
        if jwk.get("alg") not in (None, alg) or jwk.get("use") not in (None, "sig"):
            raise Unauthorized("Invalid token")
        cache_key = (str(kid), alg, str(jwk.get("x") or jwk.get("n")))
        key = self._key_objects.get(cache_key)
        if key is None:
            try:
                key = PyJWK(jwk, algorithm=alg).key
            except jwt.PyJWTError:
                raise Unauthorized("Invalid token") from None
            self._key_objects[cache_key] = key
        return key


def valid_user_id(sub: str) -> bool:
    """1-255 printable characters, no leading or trailing spaces (so not only spaces either).

    `str.isprintable()` is False for control characters (NUL, newline, DEL, C1), line and
    paragraph separators, and lone surrogates, which PostgreSQL cannot store anyway; the ASCII
    space is the only printable whitespace.
    """
    return 0 < len(sub) <= 255 and sub.isprintable() and sub == sub.strip()


def _is_number(value: Any) -> bool:
    # Not bool (a subclass of int) and not str; huge ints are fine (the lifetime check refuses them).
    return type(value) is int or (type(value) is float and math.isfinite(value))
