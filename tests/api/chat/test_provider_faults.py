"""Faults named for what they are: the model provider's answer, over real HTTP (the stub in
bench/stub_llm.py), decides what the client gets and what the log says; `task-assistant check`
says in a sentence whether the model and the database work."""

from __future__ import annotations

import json
import logging
import shlex
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from backend.core.errors import ProviderError
from backend.core.logging import EscapingFormatter
from tests.api.chat.conftest import StubApp
from tests.support.app import make_settings
from tests.support.fakes import API_KEY
from tests.support.stub_llm import StubLLM

FORGING_SUB = 'evil" user=root'


@pytest.fixture
async def client(stub_app: StubApp) -> AsyncIterator[httpx.AsyncClient]:
    async with stub_app(llm_api_key=API_KEY) as client:
        yield client


async def chat(
    client: httpx.AsyncClient, headers: dict[str, str], streamed: bool
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """(status, the error body or SSE error event, response headers)."""
    r = await client.post(
        "/api/chat", json={"message": "hello", "stream": streamed}, headers=headers
    )
    if not streamed or r.status_code != 200:
        return r.status_code, r.json(), dict(r.headers)
    events = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: ")]
    last = events[-1]
    assert last["type"] == "error", last
    retry = {"retry-after": str(last["retry_after"])} if "retry_after" in last else {}
    return int(last["status"]), last, retry


def failure_line(caplog: pytest.LogCaptureFixture) -> dict[str, str]:
    """The fields of the one `chat turn failed` line, formatted as the service writes it."""
    formatter = EscapingFormatter("%(message)s")
    (line,) = [
        formatter.format(r)
        for r in caplog.records
        if r.name == "backend.chat.turn" and r.getMessage().startswith("chat turn failed")
    ]
    assert API_KEY not in line
    words = shlex.split(line.removeprefix("chat turn failed: "))
    fields = dict(word.partition("=")[::2] for word in words)
    assert len(fields) == len(words), "every word is one field"
    return fields


@pytest.mark.parametrize(
    ("fault", "status", "code", "setting", "provider"),
    [
        (
            {
                "status": 401,
                "body": {
                    "error": {
                        "message": f"Incorrect API key provided: {API_KEY}.",
                        "type": "invalid_request_error",
                        "code": "invalid_api_key",
                    }
                },
            },
            502,
            "ai_provider_auth_failed",
            "LLM_API_KEY",
            {
                "provider_status": "401",
                "provider_code": "invalid_api_key",
                "provider_message": "Incorrect API key provided: [API key].",
            },
        ),
        (
            {  # Gemini's OpenAI-compatible endpoint: a 400 in a list, the reason in details
                "status": 400,
                "body": [
                    {
                        "error": {
                            "code": 400,
                            "message": "API key not valid. Please pass a valid API key.",
                            "status": "INVALID_ARGUMENT",
                            "details": [{"reason": "API_KEY_INVALID"}],
                        }
                    }
                ],
            },
            502,
            "ai_provider_auth_failed",
            "GEMINI_API_KEY",
            {
                "provider_status": "400",
                "provider_code": "API_KEY_INVALID",
                "provider_message": "API key not valid. Please pass a valid API key.",
            },
        ),
        (
            {
                "status": 404,
                "body": {
                    "error": {
                        "message": "The model `stub-model` does not exist",
                        "code": "model_not_found",
                    }
                },
            },
            502,
            "ai_model_not_found",
            "LLM_MODEL",
            {"provider_status": "404", "provider_code": "model_not_found"},
        ),
        (
            {"status": 500},
            503,
            "service_unavailable",
            None,
            {"provider_status": "500", "provider_message": "stub error 500"},
        ),
        (
            {"drop": True},
            503,
            "service_unavailable",
            None,
            {"provider_status": "none"},
        ),
    ],
    ids=["401", "gemini-400-api-key-invalid", "404", "500", "dropped"],
)
async def test_the_providers_answer_decides(
    client: httpx.AsyncClient,
    stub: StubLLM,
    auth_for: Callable[[str], dict[str, str]],
    caplog: pytest.LogCaptureFixture,
    streamed: bool,
    fault: dict[str, Any],
    status: int,
    code: str,
    setting: str | None,
    provider: dict[str, str],
) -> None:
    caplog.set_level(logging.INFO)
    stub.script(fault)
    got, body, _ = await chat(client, auth_for(FORGING_SUB), streamed)
    assert (got, body["code"]) == (status, code), body
    if setting:
        assert setting in body["detail"]
    if status == 503:
        assert body["detail"] == "AI service temporarily unavailable"
    said = json.dumps(body)
    assert API_KEY not in said and "stub error" not in said and "Incorrect" not in said

    fields = failure_line(caplog)
    assert fields["user"] == FORGING_SUB
    assert fields["error"] == "ProviderError" and fields["code"] == code
    assert fields["model"] == "stub-model"
    for name, value in provider.items():
        assert fields[name] == value, fields
    if fault.get("drop"):
        assert fields["provider_message"].startswith("could not reach ")


@pytest.mark.parametrize(
    ("headers", "status", "retry_after"),
    [({"Retry-After": "7"}, 429, "7"), ({}, 503, "10")],
    ids=["with-retry-after", "without"],
)
async def test_the_providers_429_always_says_when_to_retry(
    client: httpx.AsyncClient,
    stub: StubLLM,
    alice: dict[str, str],
    streamed: bool,
    headers: dict[str, str],
    status: int,
    retry_after: str,
) -> None:
    stub.script({"status": 429, "headers": headers})
    got, body, response_headers = await chat(client, alice, streamed)
    assert got == status, body
    assert response_headers["retry-after"] == retry_after
    assert "rate limited" in body["detail"]


async def test_502_is_documented_on_chat_routes(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    documented = paths["/api/chat"]["post"]["responses"]["502"]
    assert "ai_provider_auth_failed" in documented["description"]
    assert "ai_model_not_found" in documented["description"]


# --- task-assistant check ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "sentence"),
    [
        (
            ProviderError(404, message="no such model", model="m"),
            "The model does not work: http://llm has no model 'stub-model' (HTTP 404: no such "
            "model); check LLM_MODEL (and LLM_BASE_URL).",
        ),
        (
            ProviderError(400, message="bad", reason="API_KEY_INVALID"),
            "The model does not work: http://llm refused the API key in LLM_API_KEY (HTTP 400: "
            "bad).",
        ),
        (
            ProviderError(500, message="oops"),
            "The model does not work: http://llm answered HTTP 500: oops.",
        ),
        (
            ProviderError(None, message="could not reach http://llm"),
            "The model does not work: could not reach http://llm.",
        ),
    ],
)
def test_check_sentences(error: ProviderError, sentence: str, data_dir: Path) -> None:
    from backend.server.cli import _provider_sentence

    settings = make_settings("", data_dir, llm_api_key="k", llm_model="stub-model")
    assert _provider_sentence(settings, "http://llm", error) == sentence
