"""Token verification: Better Auth JWKS tokens, HS256, and every way a token can be bad."""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from backend.core.config import Settings
from backend.main import create_app
from tests.support.app import make_settings, running_app
from tests.support.fakes import AUTH_URL, SECRET, FakeBetterAuth


@pytest.fixture
async def better_auth() -> AsyncIterator[FakeBetterAuth]:
    server = FakeBetterAuth()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def auth_settings(database_url: str, data_dir: Path, better_auth: FakeBetterAuth) -> Settings:
    return make_settings(
        database_url,
        data_dir,
        better_auth_url=AUTH_URL + "/",
        better_auth_jwks_url=better_auth.jwks_url,
        jwt_secret=SECRET,
        jwt_issuer=AUTH_URL,
        jwt_audience=AUTH_URL,
        jwks_refetch_cooldown_seconds=60,
    )


@pytest.fixture
async def auth_client(auth_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(create_app(auth_settings)) as client:
        yield client


async def _status(
    client: httpx.AsyncClient, token: str
) -> tuple[int, dict[str, Any], httpx.Headers]:
    r = await client.get("/api/tasks", headers={"Authorization": f"Bearer {token}"})
    return r.status_code, r.json(), r.headers


async def test_settings_derive_jwks_issuer_audience(database_url: str, data_dir: Path) -> None:
    settings = make_settings(database_url, data_dir, better_auth_url=AUTH_URL + "/")
    assert settings.jwks_url == "http://localhost:3000/api/auth/jwks"
    auth_settings = settings
    assert auth_settings.expected_issuer == AUTH_URL
    assert auth_settings.expected_audience == AUTH_URL
    assert not auth_settings.dev_auth


def test_short_secret_refused(database_url: str, data_dir: Path) -> None:
    with pytest.raises(ValueError, match="at least 32 bytes"):
        make_settings(database_url, data_dir, jwt_secret="too-short")


async def test_valid_eddsa_token(
    auth_client: httpx.AsyncClient, better_auth: FakeBetterAuth
) -> None:
    status, body, _ = await _status(auth_client, better_auth.sign())
    assert status == 200 and body == {"tasks": [], "next_cursor": None}


@pytest.mark.parametrize(
    ("alg", "make_key"),
    [
        ("ES256", lambda: ec.generate_private_key(ec.SECP256R1())),
        ("ES512", lambda: ec.generate_private_key(ec.SECP521R1())),
        ("RS256", lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        ("PS256", lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)),
    ],
)
async def test_other_better_auth_algorithms(
    auth_client: httpx.AsyncClient,
    better_auth: FakeBetterAuth,
    alg: str,
    make_key: Callable[[], Any],
) -> None:
    better_auth.add("k-" + alg, make_key(), alg)
    status, _, _ = await _status(auth_client, better_auth.sign("k-" + alg))
    assert status == 200


async def test_valid_hs256_token(auth_client: httpx.AsyncClient) -> None:
    now = int(time.time())
    token = jwt.encode(
        {"sub": "u", "iat": now, "exp": now + 60, "iss": AUTH_URL, "aud": AUTH_URL},
        SECRET,
        algorithm="HS256",
    )
    status, _, _ = await _status(auth_client, token)
    assert status == 200


def _none_token() -> str:
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    now = int(time.time())
    payload = f'{{"sub":"u","iat":{now},"exp":{now + 60},"iss":"{AUTH_URL}","aud":"{AUTH_URL}"}}'
    header = b64(b'{"alg":"none","typ":"JWT"}')
    return f"{header}.{b64(payload.encode())}."


def _hs256_with_public_key(fake: FakeBetterAuth) -> str:
    private, _ = fake.keys["ed-1"]
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    now = int(time.time())
    body = {"sub": "u", "iat": now, "exp": now + 60, "iss": AUTH_URL, "aud": AUTH_URL}
    # PyJWT refuses PEM keys as HMAC secrets, so build the HMAC by hand.
    import hashlib
    import hmac
    import json

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = (
        b64(json.dumps({"alg": "HS256", "kid": "ed-1"}).encode())
        + "."
        + b64(json.dumps(body).encode())
    )
    sig = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64(sig)


@pytest.mark.parametrize(
    ("make_token", "detail"),
    [
        (
            lambda f: f.sign(exp=int(time.time()) - 120, iat=int(time.time()) - 1000),
            "Token expired",
        ),
        (
            lambda f: f.sign(iat=int(time.time()) + 600, nbf=int(time.time()) + 600),
            "Token not yet valid",
        ),
        (lambda f: f.sign(iss="http://evil.example"), "Invalid token"),
        (lambda f: f.sign(aud="http://other-app.example"), "Invalid token"),
        (lambda f: f.sign(sub=None), "Invalid token"),
        (lambda f: f.sign(exp=None), "Invalid token"),
        (lambda f: f.sign(iat=None), "Invalid token"),
        (lambda f: f.sign(sub=""), "Invalid token"),
        (
            lambda f: f.sign(key=ed25519.Ed25519PrivateKey.generate()),
            "Invalid token",
        ),  # foreign key, known kid
        (lambda f: _none_token(), "Invalid token"),
        (_hs256_with_public_key, "Invalid token"),
        (
            lambda f: f.sign(alg="ES256", key=ec.generate_private_key(ec.SECP256R1())),
            "Invalid token",
        ),  # alg/key mismatch
        (lambda f: "garbage", "Invalid token"),
        (lambda f: "a.b.c", "Invalid token"),
        (
            lambda f: jwt.encode({"sub": "u", "iat": 1, "exp": 2**40}, "x" * 40, algorithm="HS256"),
            "Invalid token",
        ),
    ],
    ids=[
        "expired",
        "not-yet-valid",
        "wrong-iss",
        "wrong-aud",
        "missing-sub",
        "missing-exp",
        "missing-iat",
        "empty-sub",
        "foreign-key",
        "alg-none",
        "hs256-with-public-key",
        "alg-key-mismatch",
        "garbage",
        "dots",
        "wrong-secret",
    ],
)
async def test_bad_tokens_answer_401(
    auth_client: httpx.AsyncClient,
    better_auth: FakeBetterAuth,
    make_token: Callable[[FakeBetterAuth], str],
    detail: str,
) -> None:
    token = make_token(better_auth)
    status, body, headers = await _status(auth_client, token)
    assert status == 401
    assert body == {"detail": detail, "code": "unauthorized"}
    assert headers["www-authenticate"].startswith("Bearer")
    assert token not in str(body)


@pytest.mark.parametrize(
    "header", [None, "", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Token abc"]
)
async def test_missing_or_empty_credentials(
    auth_client: httpx.AsyncClient, header: str | None
) -> None:
    headers = {"Authorization": header} if header is not None else {}
    r = await auth_client.get("/api/tasks", headers=headers)
    assert r.status_code == 401
    assert r.json()["code"] == "unauthorized"
    assert "www-authenticate" in r.headers


async def test_unknown_kids_refetch_within_a_budget_per_cooldown(
    auth_client: httpx.AsyncClient, better_auth: FakeBetterAuth
) -> None:
    assert (await _status(auth_client, better_auth.sign()))[0] == 200
    assert better_auth.fetches == 1
    # A rotated key appears at the auth server: the first token with its kid triggers a refetch.
    better_auth.add("ed-2", ed25519.Ed25519PrivateKey.generate(), "EdDSA")
    assert (await _status(auth_client, better_auth.sign("ed-2")))[0] == 200
    assert better_auth.fetches == 2
    # Two more new kids fit the budget of 3 per cooldown; after that, new kids answer 401
    # without reaching the auth server again.
    statuses = []
    for i in range(20):
        better_auth.add(f"new-{i}", ed25519.Ed25519PrivateKey.generate(), "EdDSA")
        statuses.append((await _status(auth_client, better_auth.sign(f"new-{i}")))[0])
    assert statuses == [200, 200] + [401] * 18
    assert better_auth.fetches == 4


async def test_auth_server_down_without_cached_keys_is_503(
    auth_settings: Settings, better_auth: FakeBetterAuth
) -> None:
    better_auth.status = 502
    async with running_app(create_app(auth_settings)) as client:
        status, body, _ = await _status(client, better_auth.sign())
        assert status == 503
        assert body["detail"] == "Authentication service unavailable"


async def test_dev_mode_token_from_the_cli(
    settings: Settings,
    data_dir: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from backend.core.config import get_settings
    from backend.server import cli

    monkeypatch.setenv("DATA_DIR", str(data_dir))
    get_settings.cache_clear()
    try:
        cli.main(["token", "carol"])
    finally:
        get_settings.cache_clear()
    token = capsys.readouterr().out.strip()
    assert jwt.get_unverified_header(token)["alg"] == "EdDSA"
    app = create_app(settings)
    async with running_app(app) as client:
        r = await client.post(
            "/api/tasks", json={"title": "dev"}, headers={"Authorization": f"Bearer {token}"}
        )
        assert r.status_code == 201
