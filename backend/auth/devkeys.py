"""The development signing key: used when neither BETTER_AUTH_URL nor JWT_SECRET is set.

`make run` needs no auth server; the service trusts a local Ed25519 key kept in DATA_DIR, and
`task-assistant token <user>` signs tokens with it for curl. Never use this mode in production.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from backend.core.config import DEV_ISSUER

KEY_FILE = "dev-jwt-ed25519.pem"

DEV_TOKEN_TTL_SECONDS = 8 * 3600
"""How long a development token lives, however it is minted: `task-assistant token <user>` (its
`--ttl` default) and `POST /api/dev/token` (the playground's sign-in)."""

UNKNOWN_KEY_DETAIL = (
    "Token signed by a key that no longer exists: development auth trusts only the current "
    "development key in DATA_DIR (a new one is made when DATA_DIR is reset); "
    "mint a new token with `task-assistant token <user>`"
)
"""The 401 detail in development auth for a token whose `kid` is not the current key's."""


def load_or_create_dev_key(data_dir: Path) -> Ed25519PrivateKey:
    """The development key in `data_dir`, made on first use.

    Several processes may start together on a fresh DATA_DIR (replicas, workers): the key is
    written to a private temporary file and linked into place, so exactly one key wins and
    nobody reads a half-written file.
    """
    path = data_dir / KEY_FILE
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        fd, tmp = tempfile.mkstemp(dir=data_dir, prefix=".dev-key-")  # mode 0600
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(pem)
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process made it first: use theirs
        finally:
            os.unlink(tmp)
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise RuntimeError(f"{path} is not an Ed25519 private key")
    return key


def public_jwk(key: Ed25519PrivateKey) -> dict[str, Any]:
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    x = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    thumbprint = hashlib.sha256(json.dumps({"crv": "Ed25519", "kty": "OKP", "x": x}).encode())
    return {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": x,
        "alg": "EdDSA",
        "kid": "dev-" + thumbprint.hexdigest()[:16],
    }


def mint_token(
    key: Ed25519PrivateKey,
    sub: str,
    *,
    ttl_seconds: int = DEV_TOKEN_TTL_SECONDS,
    issuer: str = DEV_ISSUER,
    audience: str = DEV_ISSUER,
    extra: dict[str, Any] | None = None,
) -> str:
    now = int(time.time())
    claims = {"sub": sub, "iat": now, "exp": now + ttl_seconds, "iss": issuer, "aud": audience}
    claims.update(extra or {})
    return jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": public_jwk(key)["kid"]})
