"""backend.auth.verifier with keys known up front (no JWKS fetch, no network): the development
Ed25519 key served as a static key set, as `backend.main.build_verifier` wires it, and HS256
with a shared secret."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from pathlib import Path
from typing import Any

import jwt
import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from backend.auth.devkeys import (
    KEY_FILE,
    UNKNOWN_KEY_DETAIL,
    load_or_create_dev_key,
    mint_token,
    public_jwk,
)
from backend.auth.jwks import JWKSCache
from backend.auth.user import User
from backend.auth.verifier import TokenVerifier, valid_user_id
from backend.core.config import DEV_ISSUER
from backend.core.errors import Unauthorized

SECRET = "a-shared-secret-of-at-least-32-bytes!"
ISS = "https://app.example.com"
AUD = "https://api.example.com"


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> Ed25519PrivateKey:
    return load_or_create_dev_key(tmp_path_factory.mktemp("devkey"))


@pytest.fixture
def verifier(key: Ed25519PrivateKey) -> TokenVerifier:
    return TokenVerifier(
        jwks=JWKSCache(None, None, static_keys=[public_jwk(key)]),
        secret=None,
        issuer=DEV_ISSUER,
        audience=DEV_ISSUER,
        leeway=30,
        unknown_key_detail=UNKNOWN_KEY_DETAIL,
        max_lifetime=86_400,
    )


@pytest.fixture
def hs_verifier() -> TokenVerifier:
    return TokenVerifier(jwks=None, secret=SECRET, issuer=ISS, audience=AUD)


def claims(**values: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {"sub": "alice", "iat": now, "exp": now + 600, "iss": ISS, "aud": AUD}
    base.update(values)
    return {k: v for k, v in base.items() if v is not ...}


def signed(key: Ed25519PrivateKey, headers: dict[str, Any] | None = None, **values: Any) -> str:
    body = claims(**{"iss": DEV_ISSUER, "aud": DEV_ISSUER, **values})
    return jwt.encode(
        body, key, algorithm="EdDSA", headers={"kid": public_jwk(key)["kid"], **(headers or {})}
    )


def hs256(secret: str = SECRET, **values: Any) -> str:
    return jwt.encode(claims(**values), secret, algorithm="HS256")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def by_hand(key: Ed25519PrivateKey, header: dict[str, Any]) -> str:
    """A dev-key token with exactly this header."""
    signing_input = (
        _b64(orjson.dumps(header))
        + "."
        + _b64(orjson.dumps(claims(iss=DEV_ISSUER, aud=DEV_ISSUER)))
    )
    return signing_input + "." + _b64(key.sign(signing_input.encode()))


async def refused(verifier: TokenVerifier, token: str) -> str:
    with pytest.raises(Unauthorized) as caught:
        await verifier.verify(token)
    assert caught.value.status == 401
    assert caught.value.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    return caught.value.detail


# --- the development key --------------------------------------------------------------------


def test_the_dev_key_is_made_once_and_then_reused(tmp_path: Path) -> None:
    first = load_or_create_dev_key(tmp_path / "data")
    again = load_or_create_dev_key(tmp_path / "data")
    assert public_jwk(first) == public_jwk(again)
    assert (tmp_path / "data" / KEY_FILE).stat().st_mode & 0o077 == 0  # private to its owner
    assert [p.name for p in (tmp_path / "data").iterdir()] == [KEY_FILE]  # no temporary left


def test_a_key_file_that_is_not_ed25519_is_refused(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    pem = generate_private_key(SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (tmp_path / KEY_FILE).write_bytes(pem)
    with pytest.raises(RuntimeError, match="not an Ed25519 private key"):
        load_or_create_dev_key(tmp_path)


def test_the_public_jwk_is_an_eddsa_key_named_by_its_thumbprint(key: Ed25519PrivateKey) -> None:
    jwk = public_jwk(key)
    assert (jwk["kty"], jwk["crv"], jwk["alg"]) == ("OKP", "Ed25519", "EdDSA")
    assert jwk["kid"].startswith("dev-")
    assert len(base64.urlsafe_b64decode(jwk["x"] + "=")) == 32
    assert "d" not in jwk  # never the private part
    assert public_jwk(Ed25519PrivateKey.generate())["kid"] != jwk["kid"]


def test_a_minted_token_carries_the_dev_issuer_audience_and_lifetime(
    key: Ed25519PrivateKey,
) -> None:
    token = mint_token(key, "alice", ttl_seconds=120, extra={"email": "a@example.com"})
    header = jwt.get_unverified_header(token)
    body = jwt.decode(token, options={"verify_signature": False})
    assert header["alg"] == "EdDSA"
    assert header["kid"] == public_jwk(key)["kid"]
    assert (body["sub"], body["iss"], body["aud"]) == ("alice", DEV_ISSUER, DEV_ISSUER)
    assert body["exp"] - body["iat"] == 120
    assert body["email"] == "a@example.com"


# --- tokens that are accepted ------------------------------------------------------------------


async def test_a_dev_token_is_the_user_it_names(
    verifier: TokenVerifier, key: Ed25519PrivateKey
) -> None:
    token = mint_token(key, "alice")
    user = await verifier.verify(token)
    assert user == User(id="alice")
    assert user.token == token
    assert user.claims["iss"] == DEV_ISSUER


@pytest.mark.parametrize("sub", ["x" * 255, "José Müller 用户 🧪", "a b", "user_123|google"])
async def test_printable_subjects_are_user_ids(
    verifier: TokenVerifier, key: Ed25519PrivateKey, sub: str
) -> None:
    assert (await verifier.verify(mint_token(key, sub))).id == sub


async def test_a_token_without_a_kid_uses_the_only_key(
    verifier: TokenVerifier, key: Ed25519PrivateKey
) -> None:
    token = jwt.encode(claims(iss=DEV_ISSUER, aud=DEV_ISSUER), key, algorithm="EdDSA")
    assert "kid" not in jwt.get_unverified_header(token)
    assert (await verifier.verify(token)).id == "alice"


async def test_clock_skew_within_the_leeway_is_tolerated(
    verifier: TokenVerifier, key: Ed25519PrivateKey
) -> None:
    now = int(time.time())
    assert (await verifier.verify(signed(key, exp=now - 10))).id == "alice"
    assert (await verifier.verify(signed(key, iat=now + 10, nbf=now + 10))).id == "alice"


async def test_a_float_exp_is_a_number(verifier: TokenVerifier, key: Ed25519PrivateKey) -> None:
    assert (await verifier.verify(signed(key, exp=time.time() + 600.5))).id == "alice"


async def test_an_hs256_token_with_the_shared_secret(hs_verifier: TokenVerifier) -> None:
    assert (await hs_verifier.verify(hs256(sub="bob"))).id == "bob"


async def test_without_a_configured_audience_aud_is_not_checked() -> None:
    verifier = TokenVerifier(jwks=None, secret=SECRET, issuer=None, audience=None)
    assert (await verifier.verify(hs256(aud="anything", iss="anyone"))).id == "alice"
    assert (await verifier.verify(hs256(aud=..., iss=...))).id == "alice"


# --- tokens that are refused ---------------------------------------------------------------------


async def test_an_expired_token(verifier: TokenVerifier, key: Ed25519PrivateKey) -> None:
    assert await refused(verifier, mint_token(key, "alice", ttl_seconds=-60)) == "Token expired"


@pytest.mark.parametrize("claim", ["iat", "nbf"])
async def test_a_token_from_the_future(
    verifier: TokenVerifier, key: Ed25519PrivateKey, claim: str
) -> None:
    token = signed(key, **{claim: int(time.time()) + 3600})
    assert await refused(verifier, token) == "Token not yet valid"


@pytest.mark.parametrize(
    "values",
    [
        {"iss": "someone-else"},
        {"aud": "another-service"},
        {"iss": ...},
        {"aud": ...},
        {"aud": ["another-service", "yet-another"]},
    ],
    ids=["wrong-iss", "wrong-aud", "no-iss", "no-aud", "aud-list-without-ours"],
)
async def test_a_token_for_someone_else(
    verifier: TokenVerifier, key: Ed25519PrivateKey, values: dict[str, Any]
) -> None:
    assert await refused(verifier, signed(key, **values)) == "Invalid token"


async def test_an_audience_list_that_includes_ours_is_accepted(
    verifier: TokenVerifier, key: Ed25519PrivateKey
) -> None:
    assert (await verifier.verify(signed(key, aud=["x", DEV_ISSUER]))).id == "alice"


async def test_a_token_signed_by_another_key_under_our_kid(
    verifier: TokenVerifier, key: Ed25519PrivateKey
) -> None:
    forged = jwt.encode(
        claims(iss=DEV_ISSUER, aud=DEV_ISSUER),
        Ed25519PrivateKey.generate(),
        algorithm="EdDSA",
        headers={"kid": public_jwk(key)["kid"]},
    )
    assert await refused(verifier, forged) == "Invalid token"


async def test_a_tampered_payload(verifier: TokenVerifier, key: Ed25519PrivateKey) -> None:
    header, _, signature = mint_token(key, "alice").split(".")
    body = claims(iss=DEV_ISSUER, aud=DEV_ISSUER, sub="admin")
    assert await refused(verifier, f"{header}.{_b64(orjson.dumps(body))}.{signature}") == (
        "Invalid token"
    )


async def test_an_unknown_kid_explains_the_development_key(verifier: TokenVerifier) -> None:
    other = Ed25519PrivateKey.generate()
    assert await refused(verifier, mint_token(other, "alice")) == UNKNOWN_KEY_DETAIL


async def test_a_kid_that_is_not_a_string(verifier: TokenVerifier, key: Ed25519PrivateKey) -> None:
    # Signed by hand: PyJWT will not write a non-string kid.
    good = by_hand(key, {"alg": "EdDSA", "kid": public_jwk(key)["kid"]})
    assert (await verifier.verify(good)).id == "alice"
    assert await refused(verifier, by_hand(key, {"alg": "EdDSA", "kid": 7})) == "Invalid token"


async def test_alg_none_is_never_accepted(
    verifier: TokenVerifier, hs_verifier: TokenVerifier
) -> None:
    token = jwt.encode(claims(iss=DEV_ISSUER, aud=DEV_ISSUER), None, algorithm="none")
    assert await refused(verifier, token) == "Invalid token"
    assert (
        await refused(hs_verifier, jwt.encode(claims(), None, algorithm="none")) == "Invalid token"
    )


async def test_hs256_signed_with_the_public_key_is_refused(
    verifier: TokenVerifier, key: Ed25519PrivateKey
) -> None:
    # Algorithm confusion: without JWT_SECRET, HS256 is refused whatever it was signed with.
    x = public_jwk(key)["x"]
    token = jwt.encode(
        claims(iss=DEV_ISSUER, aud=DEV_ISSUER),
        x,
        algorithm="HS256",
        headers={"kid": public_jwk(key)["kid"]},
    )
    assert await refused(verifier, token) == "Invalid token"


async def test_an_algorithm_the_key_type_cannot_verify_is_refused(
    verifier: TokenVerifier, key: Ed25519PrivateKey
) -> None:
    ec = generate_private_key(SECP256R1())
    token = jwt.encode(
        claims(iss=DEV_ISSUER, aud=DEV_ISSUER),
        ec,
        algorithm="ES256",
        headers={"kid": public_jwk(key)["kid"]},
    )
    assert await refused(verifier, token) == "Invalid token"


async def test_a_wrong_shared_secret(hs_verifier: TokenVerifier) -> None:
    assert await refused(hs_verifier, hs256(secret="another-secret-that-is-32-bytes-long")) == (
        "Invalid token"
    )


@pytest.mark.parametrize(
    "sub",
    [..., 42, None, "", " ", "x" * 256, "line\nbreak", "nul\x00", "del\x7f", "sep\u2028"],
    ids=["missing", "int", "null", "empty", "space", "256", "newline", "nul", "del", "u2028"],
)
async def test_a_subject_that_is_not_a_usable_user_id(
    verifier: TokenVerifier, key: Ed25519PrivateKey, sub: Any
) -> None:
    assert await refused(verifier, signed(key, sub=sub)) == "Invalid token"


@pytest.mark.parametrize(
    "values",
    [{"exp": ...}, {"iat": ...}, {"exp": "9999999999"}, {"iat": True}, {"nbf": "0"}],
    ids=["no-exp", "no-iat", "exp-string", "iat-bool", "nbf-string"],
)
async def test_time_claims_must_be_present_json_numbers(
    verifier: TokenVerifier, key: Ed25519PrivateKey, values: dict[str, Any]
) -> None:
    assert await refused(verifier, signed(key, **values)) == "Invalid token"


async def test_a_lifetime_over_the_maximum(verifier: TokenVerifier, key: Ed25519PrivateKey) -> None:
    token = mint_token(key, "alice", ttl_seconds=86_400 + 3600)
    assert await refused(verifier, token) == "Token lifetime too long"


async def test_the_maximum_lifetime_is_the_verifiers_setting(key: Ed25519PrivateKey) -> None:
    strict = TokenVerifier(
        jwks=JWKSCache(None, None, static_keys=[public_jwk(key)]),
        secret=None,
        issuer=DEV_ISSUER,
        audience=DEV_ISSUER,
        max_lifetime=600,
    )
    assert (await strict.verify(mint_token(key, "alice", ttl_seconds=600))).id == "alice"
    assert await refused(strict, mint_token(key, "alice", ttl_seconds=1200)) == (
        "Token lifetime too long"
    )


@pytest.mark.parametrize(
    "token",
    ["", "abc", "a.b", "a.b.c", "....", "Bearer x.y.z", "eyJhbGciOiJFZERTQSJ9", "\x00.\x00.\x00"],
    ids=["empty", "word", "two-parts", "junk-parts", "dots", "with-scheme", "header-only", "nul"],
)
async def test_malformed_token_strings(verifier: TokenVerifier, token: str) -> None:
    assert await refused(verifier, token) == "Invalid token"


async def test_with_no_key_set_and_no_secret_every_token_is_refused(key: Ed25519PrivateKey) -> None:
    nothing = TokenVerifier(jwks=None, secret=None, issuer=None, audience=None)
    assert await refused(nothing, mint_token(key, "alice")) == "Invalid token"
    assert await refused(nothing, hs256()) == "Invalid token"


@pytest.mark.parametrize(
    ("sub", "valid"),
    [
        ("a", True),
        ("x" * 255, True),
        ("x" * 256, False),
        ("", False),
        ("   ", False),
        ("\t", False),
        ("a\ud800", False),
    ],
)
def test_valid_user_id(sub: str, valid: bool) -> None:
    assert valid_user_id(sub) is valid


def hs256_by_hand(payload: str) -> str:
    """An HS256 token whose payload is exactly this text (JSON that PyJWT will not write)."""
    signing_input = _b64(b'{"alg":"HS256","typ":"JWT"}') + "." + _b64(payload.encode())
    digest = hmac.new(SECRET.encode(), signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + _b64(digest)


async def test_a_hand_signed_token_is_accepted_when_its_claims_are_sound(
    hs_verifier: TokenVerifier,
) -> None:
    now = int(time.time())
    payload = f'{{"sub":"bob","iat":{now},"exp":{now + 60},"iss":"{ISS}","aud":"{AUD}"}}'
    assert (await hs_verifier.verify(hs256_by_hand(payload))).id == "bob"


@pytest.mark.parametrize(
    "claims_text",
    [
        '"exp":Infinity',
        '"exp":NaN',
        '"exp":1e400',
        '"iat":Infinity',
        '"iat":-1e400',
        '"nbf":-Infinity',
        '"nbf":NaN',
    ],
)
async def test_time_claims_that_are_not_finite_numbers(
    hs_verifier: TokenVerifier, claims_text: str
) -> None:
    now = int(time.time())
    base = {"iat": str(now), "exp": str(now + 60)}
    name = claims_text.split(":")[0].strip('"')
    base.pop(name, None)
    fields = [f'"{k}":{v}' for k, v in base.items()] + [claims_text]
    payload = f'{{"sub":"bob","iss":"{ISS}","aud":"{AUD}",{",".join(fields)}}}'
    assert await refused(hs_verifier, hs256_by_hand(payload)) == "Invalid token"


@pytest.mark.parametrize("payload", ["[1,2]", '"alice"', "null", "{not json"])
async def test_a_payload_that_is_not_a_claims_object(
    hs_verifier: TokenVerifier, payload: str
) -> None:
    assert await refused(hs_verifier, hs256_by_hand(payload)) == "Invalid token"
