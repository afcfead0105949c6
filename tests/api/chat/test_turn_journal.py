"""The turn journal under faults: a tool's change is never missing from the conversation, and a
retry with the same Idempotency-Key never runs a committed tool twice.

Each failure strikes after `add_task` committed: the model answers 500, the model stalls past
the timeout, the database goes away (a TCP proxy the test cuts), the server process is killed.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from backend.main import create_app
from bench.env import isolated_env
from tests.support import ROOT
from tests.support.app import make_settings, running_app
from tests.support.clients import add_message, stream, user_input
from tests.support.proxy import DatabaseProxy
from tests.support.stub_llm import StubLLM

ADD_MILK = {"tool_calls": [{"name": "add_task", "arguments": {"title": "Milk"}, "id": "c1"}]}
NEXT_TURN = ["system", "user", "assistant", "tool", "assistant", "user"]
"""The roles the model is sent in the turn after one with a tool call (and its note or reply)."""


def llm_settings(database_url: str, data_dir: Path, stub: StubLLM, **extra: Any) -> Any:
    return llm_settings(database_url, data_dir, stub, **{"rate_limit_requests": 0, **extra})


@pytest.fixture
async def behind_proxy(
    database_url: str, data_dir: Path, stub: StubLLM
) -> AsyncIterator[tuple[DatabaseProxy, Any]]:
    """Settings whose database is reached through a TCP proxy the test can cut."""
    proxy = DatabaseProxy(database_url)
    await proxy.start()
    try:
        yield (
            proxy,
            llm_settings(
                proxy.url, data_dir, stub, chat_timeout_seconds=5, database_connect_timeout=1
            ),
        )
    finally:
        await proxy.stop()


async def _tasks(client: httpx.AsyncClient, headers: dict[str, str]) -> list[str]:
    return [t["title"] for t in (await client.get("/api/tasks", headers=headers)).json()["tasks"]]


async def _messages(client: httpx.AsyncClient, cid: str, headers: dict[str, str]) -> list[Any]:
    r = await client.get(f"/api/conversations/{cid}", headers=headers)
    assert r.status_code == 200, r.text
    return [(m["role"], m["content"], m["tool_calls"]) for m in r.json()["messages"]]


async def _model_called(stub: StubLLM, times: int) -> None:
    while len(stub.requests) < times:  # noqa: ASYNC110 - the stub has no event to wait on
        await asyncio.sleep(0.02)


def _only_cid(listed: httpx.Response) -> str:
    conversations = listed.json()["conversations"]
    assert len(conversations) == 1
    return str(conversations[0]["id"])


def _assert_recorded(messages: list[Any], note_part: str) -> None:
    """The user message, then the reply carrying the committed add_task under a note."""
    assert [m[0] for m in messages] == ["user", "assistant"]
    assert messages[0][1] == "add milk"
    assert "interrupted" in messages[1][1] and note_part in messages[1][1]
    assert [c["tool"] for c in messages[1][2]] == ["add_task"]
    assert messages[1][2][0]["result"]["status"] == "created"


@pytest.mark.parametrize(
    ("fault", "status", "note_part"),
    [
        ({"status": 500}, 503, "the AI service failed"),
        ({"hang": 5}, 504, "did not answer in time"),
    ],
)
async def test_model_failure_after_a_tool(
    database_url: str,
    data_dir: Path,
    stub: StubLLM,
    alice: dict[str, str],
    fault: dict[str, Any],
    status: int,
    note_part: str,
) -> None:
    settings = llm_settings(database_url, data_dir, stub, chat_timeout_seconds=1.5)
    async with running_app(create_app(settings)) as client:
        stub.script(ADD_MILK, fault)
        key = {**alice, "Idempotency-Key": "k-1"}
        r = await client.post("/api/chat", json={"message": "add milk"}, headers=key)
        assert r.status_code == status, r.text
        cid = _only_cid(await client.get("/api/conversations", headers=alice))
        _assert_recorded(await _messages(client, cid, alice), note_part)

        # The repeat returns the turn as recorded: no second task, no model call.
        calls = len(stub.requests)
        again = await client.post("/api/chat", json={"message": "add milk"}, headers=key)
        assert again.status_code == 200, again.text
        body = again.json()
        assert body["interrupted"] is True and body["conversation_id"] == cid
        assert [c["tool"] for c in body["tool_calls"]] == ["add_task"]
        assert len(stub.requests) == calls
        assert await _tasks(client, alice) == ["Milk"]

        # The conversation takes a new turn at once, and the model sees the interruption.
        stub.script("Sure.")
        r = await client.post(
            "/api/chat", json={"message": "thanks", "conversation_id": cid}, headers=alice
        )
        assert r.status_code == 200, r.text
        sent = [m.get("role") for m in stub.requests[-1]["messages"]]
        assert sent == NEXT_TURN


async def test_an_interrupted_turn_replays_the_models_own_call_and_what_it_read(
    database_url: str, data_dir: Path, stub: StubLLM, alice: dict[str, str]
) -> None:
    """The journal keeps the model's function call as made (id, Gemini thought signature) and
    the tool output exactly as the model read it, so the next turn's history is the real one."""
    signature = {"google": {"thought_signature": "c2lnbmF0dXJl"}}
    settings = llm_settings(database_url, data_dir, stub, llm_model="gemini-3-pro")
    call = {"name": "add_task", "arguments": {"title": 'Milk "2%" \\ ü'}, "id": "c7"}
    async with running_app(create_app(settings)) as client:
        stub.script({"tool_calls": [{**call, "extra_content": signature}]}, {"status": 500})
        r = await client.post("/api/chat", json={"message": "add milk"}, headers=alice)
        assert r.status_code == 503, r.text
        read = stub.requests[-1]["messages"][-1]  # the failed request carried the tool output
        assert read["role"] == "tool" and read["tool_call_id"] == "c7"
        assert orjson.loads(read["content"])["title"] == 'Milk "2%" \\ ü'
        cid = _only_cid(await client.get("/api/conversations", headers=alice))

        stub.script("Sure.")
        r = await client.post(
            "/api/chat", json={"message": "thanks", "conversation_id": cid}, headers=alice
        )
        assert r.status_code == 200, r.text
        replayed = stub.requests[-1]["messages"]
        assert [m["role"] for m in replayed] == NEXT_TURN
        [made] = replayed[2]["tool_calls"]
        assert made["id"] == "c7" and made["extra_content"] == signature
        assert replayed[3] == read


async def test_failure_before_any_tool_runs_afresh_and_is_not_listed(
    database_url: str, data_dir: Path, stub: StubLLM, alice: dict[str, str]
) -> None:
    async with running_app(create_app(llm_settings(database_url, data_dir, stub))) as client:
        stub.script({"status": 500})
        key = {**alice, "Idempotency-Key": "k-2"}
        r = await client.post("/api/chat", json={"message": "add milk"}, headers=key)
        assert r.status_code == 503
        assert (await client.get("/api/conversations", headers=alice)).json()["conversations"] == []
        stub.script(ADD_MILK, "Added.")
        r = await client.post("/api/chat", json={"message": "add milk"}, headers=key)
        assert r.status_code == 200 and r.json()["interrupted"] is False
        assert await _tasks(client, alice) == ["Milk"]
        cid = _only_cid(await client.get("/api/conversations", headers=alice))
        assert [m[1] for m in await _messages(client, cid, alice)] == ["add milk", "Added."]


async def test_database_cut_after_a_tool(
    behind_proxy: tuple[DatabaseProxy, Any], stub: StubLLM, alice: dict[str, str]
) -> None:
    proxy, settings = behind_proxy
    async with running_app(create_app(settings)) as client:
        stub.script(ADD_MILK, {"hang": 1, "text": "Added."})
        key = {**alice, "Idempotency-Key": "k-3"}
        turn = asyncio.create_task(
            client.post("/api/chat", json={"message": "add milk"}, headers=key)
        )
        await _model_called(stub, 2)  # add_task has committed; the model is thinking
        await proxy.stop()
        r = await turn
        assert r.status_code == 503, r.text
        assert r.json()["code"] == "database_unavailable" and r.headers["Retry-After"]
        await proxy.start()  # back: the turn is closed in the background
        started = time.monotonic()
        while True:
            again = await client.post("/api/chat", json={"message": "add milk"}, headers=key)
            if again.status_code == 200:
                break
            assert again.status_code in (409, 503), again.text
            assert time.monotonic() - started < settings.turn_lock_seconds + 5
            await asyncio.sleep(0.2)
        assert again.json()["interrupted"] is True
        assert len(stub.requests) == 2  # never ran again
        assert await _tasks(client, alice) == ["Milk"]
        cid = again.json()["conversation_id"]
        _assert_recorded(await _messages(client, cid, alice), "database was unavailable")
        stub.script("Sure.")
        r = await client.post(
            "/api/chat", json={"message": "next", "conversation_id": cid}, headers=alice
        )
        assert r.status_code == 200


async def test_streaming_with_idempotency_key_runs_once_and_repeats_at_once(
    database_url: str, data_dir: Path, stub: StubLLM, alice: dict[str, str]
) -> None:
    async with running_app(create_app(llm_settings(database_url, data_dir, stub))) as client:
        stub.script(ADD_MILK, "Added.")
        key = {**alice, "Idempotency-Key": "k-4"}
        body = {"message": "add milk", "stream": True}
        first = await client.post("/api/chat", json=body, headers=key)
        assert first.status_code == 200 and '"type":"done"' in first.text
        started = time.monotonic()
        again = await client.post("/api/chat", json=body, headers=key)
        assert time.monotonic() - started < 2
        assert '"type":"done"' in again.text and "Added." in again.text
        assert len(stub.requests) == 2 and await _tasks(client, alice) == ["Milk"]


async def test_turn_in_progress_says_when_to_retry(
    database_url: str, data_dir: Path, stub: StubLLM, alice: dict[str, str]
) -> None:
    async with running_app(create_app(llm_settings(database_url, data_dir, stub))) as client:
        stub.script("one", {"hang": 1, "text": "two"})
        cid = (await client.post("/api/chat", json={"message": "a"}, headers=alice)).json()[
            "conversation_id"
        ]
        slow = asyncio.create_task(
            client.post("/api/chat", json={"message": "b", "conversation_id": cid}, headers=alice)
        )
        await _model_called(stub, 2)  # add_task has committed; the model is thinking
        r = await client.post(
            "/api/chat", json={"message": "c", "conversation_id": cid}, headers=alice
        )
        assert r.status_code == 409 and r.json()["code"] == "turn_in_progress"
        assert 1 <= int(r.headers["Retry-After"]) <= 5
        assert (await slow).status_code == 200


async def test_first_request_after_the_pool_died_succeeds(
    database_url: str, data_dir: Path, alice: dict[str, str]
) -> None:
    settings = make_settings(database_url, data_dir, database_ping_idle_seconds=0.2)
    async with running_app(create_app(settings)) as client:
        for _ in range(3):  # warm several pooled connections
            assert (await client.get("/api/tasks", headers=alice)).status_code == 200
        admin = create_async_engine(database_url)
        async with admin.begin() as conn:
            killed = (
                await conn.execute(
                    text(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE application_name = 'task-assistant' AND pid <> pg_backend_pid() "
                        "AND datname = current_database()"
                    )
                )
            ).scalar_one()
        await admin.dispose()
        assert killed >= 1
        await asyncio.sleep(0.3)
        r = await client.get("/api/tasks", headers=alice)
        assert r.status_code == 200, r.text
        r = await client.post("/api/tasks", json={"title": "after"}, headers=alice)
        assert r.status_code == 201


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "backend.main:app", "--port", str(port)],
        env=env,
        cwd=ROOT,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        assert proc.poll() is None and time.monotonic() < deadline, "server did not start"
        time.sleep(0.1)


async def test_server_killed_after_a_tool(
    database_url: str, tmp_path: Path, stub: StubLLM, token_for: Any
) -> None:
    """SIGKILL mid-turn: the next server process answers the repeat from the journal."""
    timeout = 2.0
    env = isolated_env()
    env.update(
        DATABASE_URL=database_url,
        DATA_DIR=str(tmp_path),
        LLM_BASE_URL=stub.base_url,
        LLM_API_KEY="test-key",
        LLM_MODEL="stub-model",
        LLM_MAX_RETRIES="0",
        CHAT_TIMEOUT_SECONDS=str(timeout),
        LOG_LEVEL="WARNING",
    )
    from backend.auth.devkeys import load_or_create_dev_key, mint_token

    headers = {"Authorization": f"Bearer {mint_token(load_or_create_dev_key(tmp_path), 'kim')}"}
    key = {**headers, "Idempotency-Key": "k-5"}
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    proc = await asyncio.to_thread(_serve, env, port)
    try:
        stub.script(ADD_MILK, {"hang": 30, "text": "never"})
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            turn = asyncio.create_task(
                client.post("/api/chat", json={"message": "add milk"}, headers=key)
            )
            await _model_called(stub, 2)  # add_task has committed; the model is thinking
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
            with pytest.raises(httpx.HTTPError):
                await turn
        proc = await asyncio.to_thread(_serve, env, port)
        killed_at = time.monotonic()
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            again = await client.post("/api/chat", json={"message": "add milk"}, headers=key)
            assert again.status_code == 200, again.text
            assert again.json()["interrupted"] is True
            assert await _tasks(client, headers) == ["Milk"]
            cid = again.json()["conversation_id"]
            _assert_recorded(await _messages(client, cid, headers), "")
            stub.script("Sure.")
            r = await client.post(
                "/api/chat", json={"message": "next", "conversation_id": cid}, headers=headers
            )
            assert r.status_code == 200, r.text
            assert time.monotonic() - killed_at < timeout + 5 + 5
            assert len(stub.requests) == 3  # add_task never ran again
    finally:
        proc.terminate()
        proc.wait(10)


async def test_chatkit_database_cut_after_a_tool(
    behind_proxy: tuple[DatabaseProxy, Any], stub: StubLLM, alice: dict[str, str]
) -> None:
    """The same promise through /api/chatkit: the thread shows the committed tool call."""
    proxy, settings = behind_proxy
    from chatkit.types import ThreadCreateParams, ThreadsCreateReq

    async with running_app(create_app(settings)) as client:
        stub.script("hello")
        create = ThreadsCreateReq(params=ThreadCreateParams(input=user_input("hi")))
        thread_id = (await stream(client, create, alice))[0].thread.id
        stub.script(ADD_MILK, {"hang": 1, "text": "Added."})
        turn = asyncio.create_task(stream(client, add_message(thread_id, "add milk"), alice))
        await _model_called(stub, 3)
        await proxy.stop()
        events = await turn
        assert events[-1].type == "error"
        await proxy.start()
        deadline = time.monotonic() + settings.turn_lock_seconds
        while True:  # closed in the background once the database is back
            messages = await _messages(client, thread_id, alice)
            if "interrupted" in messages[-1][1]:
                break
            assert time.monotonic() < deadline
            await asyncio.sleep(0.2)
        _assert_recorded(messages[2:], "database was unavailable")
        assert await _tasks(client, alice) == ["Milk"]
        stub.script("Sure.")
        events = await stream(client, add_message(thread_id, "next"), alice)
        assert events[-1].type == "thread.item.done"
