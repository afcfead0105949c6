"""The turn journal under faults that need more than the app in process: the database cut
(a TCP proxy the test cuts) and the server process killed after `add_task` committed. The
conversation still shows the change, and a retry with the same key never runs it twice."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from backend.main import create_app
from bench.env import isolated_env
from tests.support import ROOT
from tests.support.app import free_port, make_settings, running_app
from tests.support.clients import add_message, stream, user_input
from tests.support.journal import (
    ADD_MILK,
    _assert_recorded,
    _messages,
    _model_called,
    _tasks,
)
from tests.support.proxy import DatabaseProxy
from tests.support.stub_llm import StubLLM


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
    port = free_port()
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
