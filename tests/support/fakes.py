"""The fakes the tests (and the benchmark) share: a gated scripted model, a fake Better Auth
JWKS server, and the headers an MCP client sends. The OpenAI-compatible stub model server is
`tests.support.stub_llm`; a rule-following model is `tests.support.rule_model`."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path
from typing import Any

import jwt
from agents.testing import ScriptedModel
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from tests.support.app import make_settings
from tests.support.stub_llm import StubLLM

API_KEY = "sk-test-0123456789"
"""A provider key the tests check never reaches a client or a log."""
MCP_HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
AUTH_URL = "http://localhost:3000"
SECRET = "s" * 40


class GatedModel(ScriptedModel):
    """A scripted model whose calls (plain or streamed) wait for `gate`: a model still thinking.
    Every call waits, or only the `gated_call`-th; `entered` is set when a gated call starts."""

    def __init__(self, steps: list[Any] | None = None, gated_call: int | None = None) -> None:
        super().__init__()
        self.extend(steps or [])
        self.gated_call = gated_call
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()
        self.count = 0

    async def _wait_if_gated(self) -> None:
        self.count += 1
        if self.gated_call is None or self.count == self.gated_call:
            self.entered.set()
            await self.gate.wait()

    async def get_response(self, *args: Any, **kwargs: Any) -> Any:
        await self._wait_if_gated()
        return await super().get_response(*args, **kwargs)

    def stream_response(self, *args: Any, **kwargs: Any) -> Any:
        parent = super().stream_response

        async def gen() -> Any:
            await self._wait_if_gated()
            async for event in parent(*args, **kwargs):
                yield event

        return gen()


def _jwk(private: Any, kid: str, alg: str | None) -> dict[str, Any]:
    public = private.public_key()
    if isinstance(private, ed25519.Ed25519PrivateKey):
        data = OKPAlgorithm.to_jwk(public, as_dict=True)
    elif isinstance(private, ec.EllipticCurvePrivateKey):
        data = ECAlgorithm.to_jwk(public, as_dict=True)
    else:
        data = RSAAlgorithm.to_jwk(public, as_dict=True)
    data["kid"] = kid
    if alg:
        data["alg"] = alg
    return data


class FakeBetterAuth:
    """Serves a JWKS over real HTTP (on a free port) and counts fetches."""

    def __init__(self) -> None:
        self.keys: dict[str, tuple[Any, str]] = {}
        self.fetches = 0
        self.status = 200
        self.add("ed-1", ed25519.Ed25519PrivateKey.generate(), "EdDSA")
        self._runner: web.AppRunner | None = None
        self.jwks_url = ""

    def add(self, kid: str, private: Any, alg: str) -> None:
        self.keys[kid] = (private, alg)

    async def handler(self, request: web.Request) -> web.Response:
        self.fetches += 1
        if self.status != 200:
            return web.Response(status=self.status)
        # Better Auth <= 1.3 omits `alg`; do the same for the EdDSA key.
        keys = [
            _jwk(p, kid, None if alg == "EdDSA" else alg) for kid, (p, alg) in self.keys.items()
        ]
        return web.json_response({"keys": keys})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/api/auth/jwks", self.handler)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.jwks_url = f"http://127.0.0.1:{port}/api/auth/jwks"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def sign(
        self, kid: str = "ed-1", *, alg: str | None = None, key: Any = None, **claims: Any
    ) -> str:
        private, key_alg = self.keys[kid]
        now = int(time.time())
        body = {"sub": "user-1", "iat": now, "exp": now + 900, "iss": AUTH_URL, "aud": AUTH_URL}
        body.update(claims)
        body = {k: v for k, v in body.items() if v is not None}
        return jwt.encode(body, key or private, algorithm=alg or key_alg, headers={"kid": kid})


def redis_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=0.5):
            return True
    except OSError:
        return False


def llm_settings(database_url: str, data_dir: Path, stub: StubLLM, **extra: Any) -> Any:
    values = {
        "llm_base_url": stub.base_url,
        "llm_api_key": "test-key",
        "llm_model": "stub-model",
        "llm_max_retries": 0,
    }
    return make_settings(database_url, data_dir, **{**values, **extra})
