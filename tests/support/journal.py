"""What the turn-journal tests share: a scripted add_task call, settings on the stub model, a
database behind a TCP proxy the test can cut, and readers of what a conversation shows."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx

from tests.support.fakes import llm_settings
from tests.support.stub_llm import StubLLM

ADD_MILK = {"tool_calls": [{"name": "add_task", "arguments": {"title": "Milk"}, "id": "c1"}]}


def journal_settings(database_url: str, data_dir: Path, stub: StubLLM, **extra: Any) -> Any:
    return llm_settings(database_url, data_dir, stub, **{"rate_limit_requests": 0, **extra})


async def _tasks(client: httpx.AsyncClient, headers: dict[str, str]) -> list[str]:
    return [t["title"] for t in (await client.get("/api/tasks", headers=headers)).json()["tasks"]]


async def _messages(client: httpx.AsyncClient, cid: str, headers: dict[str, str]) -> list[Any]:
    r = await client.get(f"/api/conversations/{cid}", headers=headers)
    assert r.status_code == 200, r.text
    return [(m["role"], m["content"], m["tool_calls"]) for m in r.json()["messages"]]


async def _model_called(stub: StubLLM, times: int) -> None:
    while len(stub.requests) < times:  # noqa: ASYNC110 - the stub has no event to wait on
        await asyncio.sleep(0.02)


def _assert_recorded(messages: list[Any], note_part: str) -> None:
    """The user message, then the reply carrying the committed add_task under a note."""
    assert [m[0] for m in messages] == ["user", "assistant"]
    assert messages[0][1] == "add milk"
    assert "interrupted" in messages[1][1] and note_part in messages[1][1]
    assert [c["tool"] for c in messages[1][2]] == ["add_task"]
    assert messages[1][2][0]["result"]["status"] == "created"
