"""Token rules beyond the signature: the shape of `sub`, numeric and bounded `exp`, required
`iss`/`aud` for HS256, and the refetch budget for unknown key ids."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from pydantic import ValidationError

from backend.auth.jwks import JWKSCache
from backend.auth.verifier import TokenVerifier
from backend.core.errors import Unauthorized
from backend.main import create_app
from tests.support.app import make_settings, running_app
from tests.support.fakes import AUTH_URL, SECRET, FakeBetterAuth

ISSUER = "https://app.example.com"


AUDIENCE = "task-assistant"


def _hs256(**claims: Any) -> str:
    now = int(time.time())
    body = {"sub": "u1", "iat": now, "exp": now + 600, "iss": ISSUER, "aud": AUDIENCE, **claims}
    return jwt.encode({k: v for k, v in body.items() if v is not None}, SECRET, algorithm="HS256")


@pytest.mark.parametrize(
    "sub",
    [
        "alice\n2026-01-01 INFO [backend.access] GET /api/tasks 200 user=admin",
        "nul\x00byte",
        "lone \ud800 surrogate",
        "carriage\rreturn",
        "tab\there",
        "del\x7f",
        "c1\x85control",
        "line\u2028separator",
        " ",
        "x" * 256,
    ],
    ids=["newline", "nul", "surrogate", "cr", "tab", "del", "c1", "u2028", "blank", "256-chars"],
)
async def test_unprintable_or_long_sub_is_401(
    client: httpx.AsyncClient, token_for: Callable[..., str], sub: str
) -> None:
    headers = {"Authorization": f"Bearer {token_for(sub)}"}
    for method, url in (("GET", "/api/tasks"), ("POST", "/api/tasks")):
        r = await client.request(method, url, json={"title": "x"}, headers=headers)
        assert r.status_code == 401, (sub, r.status_code, r.text)
        assert r.json() == {"detail": "Invalid token", "code": "unauthorized"}
    mcp = await client.post(
        "/mcp",
        json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
        headers={**headers, "Accept": "application/json, text/event-stream"},
    )
    assert mcp.status_code == 401


@pytest.mark.parametrize("sub", ["x" * 255, "José Müller 用户 🧪", "a b"])
async def test_printable_sub_up_to_255_chars_is_accepted(
    client: httpx.AsyncClient, token_for: Callable[..., str], sub: str
) -> None:
    headers = {"Authorization": f"Bearer {token_for(sub)}"}
    r = await client.post("/api/tasks", json={"title": "mine"}, headers=headers)
    assert r.status_code == 201
    assert [
        t["title"] for t in (await client.get("/api/tasks", headers=headers)).json()["tasks"]
    ] == ["mine"]


@pytest.mark.parametrize(
    ("claims", "detail"),
    [
        ({"exp": str(int(time.time()) + 600)}, "Invalid token"),
        ({"exp": 10**30}, "Token lifetime too long"),
        ({"exp": int(time.time()) + 86_400 + 3600}, "Token lifetime too long"),
        ({"exp": [int(time.time()) + 600]}, "Invalid token"),
        ({"iat": str(int(time.time()))}, "Invalid token"),
        ({"nbf": str(int(time.time()))}, "Invalid token"),
    ],
    ids=["exp-string", "exp-1e30", "exp-25h", "exp-list", "iat-string", "nbf-string"],
)
async def test_exp_must_be_a_number_within_the_maximum_lifetime(
    client: httpx.AsyncClient, token_for: Callable[..., str], claims: dict[str, Any], detail: str
) -> None:
    token = token_for("alice", extra=claims)
    r = await client.get("/api/tasks", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401
    assert r.json() == {"detail": detail, "code": "unauthorized"}


async def test_float_exp_and_default_dev_tokens_are_accepted(
    client: httpx.AsyncClient, token_for: Callable[..., str]
) -> None:
    for token in (token_for("alice"), token_for("alice", extra={"exp": time.time() + 60.5})):
        r = await client.get("/api/tasks", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200


async def test_max_token_lifetime_is_configurable(
    database_url: str, data_dir: Path, token_for: Callable[..., str]
) -> None:
    settings = make_settings(database_url, data_dir, max_token_lifetime_seconds=3600)
    async with running_app(create_app(settings)) as client:
        for ttl, status in ((3000, 200), (12 * 3600, 401)):
            token = token_for("alice", ttl_seconds=ttl)
            r = await client.get("/api/tasks", headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == status


def test_jwt_secret_without_issuer_and_audience_is_refused(
    database_url: str, data_dir: Path
) -> None:
    with pytest.raises(ValidationError, match="JWT_ISSUER and JWT_AUDIENCE"):
        make_settings(database_url, data_dir, jwt_secret=SECRET)
    with pytest.raises(ValidationError, match="JWT_REQUIRE_ISSUER_AUDIENCE=false"):
        make_settings(database_url, data_dir, jwt_secret=SECRET, jwt_issuer=ISSUER)
    opted_out = make_settings(
        database_url, data_dir, jwt_secret=SECRET, jwt_require_issuer_audience=False
    )
    assert opted_out.expected_issuer is None


async def test_hs256_requires_the_configured_iss_and_aud(database_url: str, data_dir: Path) -> None:
    settings = make_settings(
        database_url, data_dir, jwt_secret=SECRET, jwt_issuer=ISSUER, jwt_audience=AUDIENCE
    )
    async with running_app(create_app(settings)) as client:
        cases = [
            (_hs256(), 200),
            (_hs256(iss=None), 401),
            (_hs256(aud=None), 401),
            (_hs256(iss=None, aud=None), 401),
            (_hs256(iss="https://other.example"), 401),
            (_hs256(aud="another-service"), 401),
        ]
        for token, status in cases:
            r = await client.get("/api/tasks", headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == status, jwt.decode(token, options={"verify_signature": False})


async def test_hs256_opt_out_accepts_tokens_without_iss_and_aud(
    database_url: str, data_dir: Path
) -> None:
    settings = make_settings(
        database_url, data_dir, jwt_secret=SECRET, jwt_require_issuer_audience=False
    )
    async with running_app(create_app(settings)) as client:
        token = _hs256(iss=None, aud=None)
        r = await client.get("/api/tasks", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200


# --- unknown kids: a refetch budget instead of one global slot ---


@pytest.fixture
async def fake() -> AsyncIterator[FakeBetterAuth]:
    """A Better Auth JWKS served over real HTTP; verifiers fetch it with aiohttp."""
    server = FakeBetterAuth()
    await server.start()
    yield server
    await server.stop()
    for http in _SESSIONS:
        await http.close()
    _SESSIONS.clear()


_SESSIONS: list[aiohttp.ClientSession] = []


def _verifier(fake: FakeBetterAuth, *, cooldown: float, budget: int = 3) -> TokenVerifier:
    http = aiohttp.ClientSession()
    _SESSIONS.append(http)
    jwks = JWKSCache(
        fake.jwks_url,
        http,
        cooldown_seconds=cooldown,
        refetch_budget=budget,
    )
    return TokenVerifier(jwks=jwks, secret=None, issuer=AUTH_URL, audience=AUTH_URL)


async def _accepted(verifier: TokenVerifier, token: str) -> bool:
    try:
        await verifier.verify(token)
    except Unauthorized:
        return False
    return True


def _junk(kid: str) -> str:
    key = ed25519.Ed25519PrivateKey.generate()
    now = int(time.time())
    claims = {"sub": "x", "iat": now, "exp": now + 60, "iss": AUTH_URL, "aud": AUTH_URL}
    return jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": kid})


async def test_junk_kid_flood_then_real_rotation_is_accepted_at_once(fake: FakeBetterAuth) -> None:
    verifier = _verifier(fake, cooldown=60)
    assert await _accepted(verifier, fake.sign())
    assert fake.fetches == 1
    # A forged token replayed at full speed, concurrently and in sequence: one refetch in all.
    junk = _junk("junk-kid")
    results = await asyncio.gather(*(_accepted(verifier, junk) for _ in range(200)))
    for _ in range(200):
        results.append(await _accepted(verifier, junk))
    assert not any(results)
    assert fake.fetches == 2
    # The real rotation lands just after: its kid is fetched and accepted immediately.
    fake.add("ed-2", ed25519.Ed25519PrivateKey.generate(), "EdDSA")
    assert await _accepted(verifier, fake.sign("ed-2"))
    assert fake.fetches == 3


async def test_distinct_junk_kids_spend_the_budget_and_rotation_waits_one_refill(
    fake: FakeBetterAuth,
) -> None:
    cooldown, budget = 1.5, 3
    verifier = _verifier(fake, cooldown=cooldown, budget=budget)
    assert await _accepted(verifier, fake.sign())
    flood = [_junk(f"junk-{uuid.uuid4().hex}") for _ in range(300)]
    flood_started = time.monotonic()
    assert not any(await asyncio.gather(*(_accepted(verifier, t) for t in flood)))
    refilled = (time.monotonic() - flood_started) * budget / cooldown
    assert fake.fetches <= 1 + budget + int(refilled)  # the auth server sees the budget only
    fake.add("ed-2", ed25519.Ed25519PrivateKey.generate(), "EdDSA")
    rotated = fake.sign("ed-2")
    started = time.monotonic()
    while not await _accepted(verifier, rotated):
        assert time.monotonic() - started < cooldown / budget + 0.3, "rotation not honoured"
        await asyncio.sleep(0.02)
    # and the retries while waiting did not hammer the auth server either
    assert fake.fetches <= 1 + budget + 2


async def test_a_repeated_junk_kid_costs_one_fetch_and_the_budget_bounds_the_rest(
    fake: FakeBetterAuth,
) -> None:
    verifier = _verifier(fake, cooldown=60, budget=1)
    assert await _accepted(verifier, fake.sign())
    junk = _junk("same-junk")
    for _ in range(50):
        assert not await _accepted(verifier, junk)
    assert fake.fetches == 2
    # The budget of one was spent on the junk kid; nothing left until a refill.
    fake.add("ed-2", ed25519.Ed25519PrivateKey.generate(), "EdDSA")
    assert not await _accepted(verifier, fake.sign("ed-2"))
    assert fake.fetches == 2
