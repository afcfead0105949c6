"""Admission control for the whole process: a bound on turns running at once (503 `server_busy`
at once beyond it), reads on a pool of their own, a connection the database dropped replaced
before use, and every authenticated route spending a budget."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psycopg
from agents.testing import ScriptedModel, assistant_message
from fastapi import FastAPI

from backend.main import create_app
from backend.web.state import AppState
from tests.support.app import LIVE_STATES, make_settings, running_app, serving
from tests.support.clients import user_input
from tests.support.fakes import MCP_HEADERS, GatedModel

Headers = Callable[[str], dict[str, str]]


def _gated(turns: int) -> GatedModel:
    return GatedModel([[assistant_message(f"reply {n}")] for n in range(turns)])


async def _until(condition: Callable[[], bool], seconds: float = 5) -> None:
    async with asyncio.timeout(seconds):
        while not condition():  # noqa: ASYNC110 - state another task changes, no event to wait on
            await asyncio.sleep(0.01)


async def _thinking(model: GatedModel, calls: int) -> None:
    """Until `calls` model calls wait at the gate (their turns hold their slots)."""
    await _until(lambda: model.count >= calls)


def _busy(r: httpx.Response) -> None:
    assert r.status_code == 503, (r.status_code, r.text)
    assert r.json()["code"] == "server_busy"
    assert int(r.headers["retry-after"]) >= 1


def _chatkit_create(text: str) -> dict[str, Any]:
    return {"type": "threads.create", "params": {"input": user_input(text).model_dump()}}


def _state(app: FastAPI) -> AppState:
    return LIVE_STATES[app]


async def test_turns_beyond_the_bound_are_refused_at_once_and_slots_come_back(
    database_url: str, data_dir: Path, auth_for: Headers
) -> None:
    settings = make_settings(database_url, data_dir, max_concurrent_turns=2, rate_limit_requests=2)
    model = _gated(6)
    app = create_app(settings, model=model)
    async with running_app(app) as client:
        plain = asyncio.create_task(
            client.post("/api/chat", json={"message": "one"}, headers=auth_for("u1"))
        )
        streamed = asyncio.create_task(
            client.post(
                "/api/chat", json={"message": "two", "stream": True}, headers=auth_for("u2")
            )
        )
        await _thinking(model, 2)
        assert _state(app).chat.admission is not None
        assert _state(app).chat.admission.active == 2
        # The third turn, through every front door, is refused at once; nothing is queued.
        started = time.perf_counter()
        _busy(await client.post("/api/chat", json={"message": "3"}, headers=auth_for("u3")))
        body = {"message": "3", "stream": True}
        _busy(await client.post("/api/chat", json=body, headers=auth_for("u3")))
        _busy(await client.post("/api/u3/chat", json={"message": "3"}, headers=auth_for("u3")))
        _busy(await client.post("/api/chatkit", json=_chatkit_create("3"), headers=auth_for("u4")))
        assert time.perf_counter() - started < 2
        assert model.count == 2  # the refused turns never reached the model
        model.gate.set()
        assert (await plain).status_code == 200
        assert (await streamed).status_code == 200
        assert '"type":"done"' in (await streamed).text.replace(" ", "")
        # the streamed turn's task gives its slot back as it ends
        await _until(lambda: _state(app).chat.admission.active == 0)  # type: ignore[union-attr]
        # u3's refused REST turns spent none of its chat budget (2 turns): both run now.
        for n in range(2):
            r = await client.post("/api/chat", json={"message": f"now {n}"}, headers=auth_for("u3"))
            assert r.status_code == 200, r.text
        # Nor did u4's refused ChatKit turn (and it left no thread behind): both run now.
        u4 = auth_for("u4")
        listed = {"type": "threads.list", "params": {}}
        assert (await client.post("/api/chatkit", json=listed, headers=u4)).json()["data"] == []
        for n in range(2):
            r = await client.post("/api/chatkit", json=_chatkit_create(f"now {n}"), headers=u4)
            assert r.status_code == 200 and '"thread.created"' in r.text, r.text
        assert len((await client.post("/api/chatkit", json=listed, headers=u4)).json()["data"]) == 2
        assert _state(app).chat.admission.active == 0  # type: ignore[union-attr]


async def test_failed_and_stopped_turns_give_their_slot_back(
    database_url: str, data_dir: Path, auth_for: Headers
) -> None:
    settings = make_settings(
        database_url, data_dir, max_concurrent_turns=1, chat_timeout_seconds=0.5
    )
    model = _gated(3)
    app = create_app(settings, model=model)
    async with serving(app) as base_url, httpx.AsyncClient(base_url=base_url) as http:
        admission = _state(app).chat.admission
        assert admission is not None
        # A turn that fails (the model does not answer in time): 504, and the slot is free.
        r = await http.post("/api/chat", json={"message": "slow"}, headers=auth_for("u1"))
        assert r.status_code == 504
        assert admission.active == 0
        # A ChatKit turn whose client leaves mid-stream (the stop button) is cancelled.
        settings.chat_timeout_seconds = 30
        calls = model.count
        async with http.stream(
            "POST", "/api/chatkit", json=_chatkit_create("stop me"), headers=auth_for("u2")
        ) as streaming:
            assert streaming.status_code == 200
            await _thinking(model, calls + 1)
            assert admission.active == 1
        await _until(lambda: admission.active == 0)
        model.gate.set()
        r = await http.post("/api/chat", json={"message": "again"}, headers=auth_for("u1"))
        assert r.status_code == 200, r.text


async def test_reads_answer_while_turns_hold_every_slot_and_the_turn_pool_is_exhausted(
    database_url: str, data_dir: Path, auth_for: Headers
) -> None:
    settings = make_settings(
        database_url,
        data_dir,
        max_concurrent_turns=2,
        database_pool_size=2,
        database_connect_timeout=0.5,
        database_read_pool_size=2,
    )
    model = _gated(2)
    app = create_app(settings, model=model)
    me = auth_for("quiet")
    async with running_app(app) as client:
        task = (await client.post("/api/tasks", json={"title": "mine"}, headers=me)).json()
        turns = [
            asyncio.create_task(
                client.post("/api/chat", json={"message": f"t{n}"}, headers=auth_for(f"c{n}"))
            )
            for n in range(2)
        ]
        await _thinking(model, 2)
        state = _state(app)
        held = [await state.engine.connect() for _ in range(settings.database_pool_size)]
        try:
            # The turn pool is exhausted: a write waits out its timeout and answers 503...
            r = await client.post("/api/tasks", json={"title": "write"}, headers=me)
            assert r.status_code == 503 and r.json()["code"] == "database_unavailable"
            # ...and every turn slot is taken...
            _busy(await client.post("/api/chat", json={"message": "x"}, headers=me))
            # ...while the quiet user's reads answer, and quickly.
            started = time.perf_counter()
            for _ in range(5):
                r = await client.get("/api/tasks", headers=me)
                assert r.status_code == 200 and r.json()["tasks"][0]["title"] == "mine"
                r = await client.get(f"/api/tasks/{task['id']}", headers=me)
                assert r.status_code == 200
                assert (await client.get("/api/conversations", headers=me)).status_code == 200
                assert (await client.get("/api/chatkit/health", headers=me)).status_code == 200
            assert time.perf_counter() - started < 2
            # The conversation of a turn still running (unlisted until its first turn ends).
            with psycopg.connect(database_url.replace("+psycopg", "")) as db:
                row = db.execute("SELECT id FROM conversations WHERE user_id = 'c0'").fetchone()
            assert row is not None
            r = await client.get(f"/api/conversations/{row[0]}", headers=auth_for("c0"))
            assert r.status_code == 200
        finally:
            for conn in held:
                await conn.close()
        model.gate.set()
        assert [(await t).status_code for t in turns] == [200, 200]


async def test_the_first_request_after_the_database_dropped_every_connection_succeeds(
    database_url: str, data_dir: Path, auth_for: Headers
) -> None:
    # No idle ping (idle connections are checked by the round trip only after an hour): what
    # saves the request is the check at checkout that costs no round trip.
    settings = make_settings(database_url, data_dir, database_ping_idle_seconds=3600)
    model = ScriptedModel([[assistant_message(f"reply {n}")] for n in range(2)])
    me = auth_for("alice")
    async with running_app(create_app(settings, model=model)) as client:
        # Both pools hold connections: reads, writes, a turn.
        assert (await client.get("/api/tasks", headers=me)).status_code == 200
        assert (await client.post("/api/tasks", json={"title": "a"}, headers=me)).status_code == 201
        assert (
            await client.post("/api/chat", json={"message": "hi"}, headers=me)
        ).status_code == 200
        with psycopg.connect(database_url.replace("+psycopg", ""), autocommit=True) as admin:
            killed = admin.execute(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 5000)) "
                "FROM pg_stat_activity WHERE datname = current_database() "
                "AND application_name = 'task-assistant' AND pid <> pg_backend_pid()"
            ).fetchone()
        assert killed is not None and killed[0] >= 2
        r = await client.get("/api/tasks", headers=me)
        assert r.status_code == 200, r.text
        r = await client.post("/api/tasks", json={"title": "b"}, headers=me)
        assert r.status_code == 201, r.text
        r = await client.post("/api/chat", json={"message": "again"}, headers=me)
        assert r.status_code == 200, r.text
        assert (await client.get("/api/conversations", headers=me)).status_code == 200


def _mcp(method: str, n: int) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if method == "initialize":
        params = {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "test", "version": "1"},
        }
    return {"jsonrpc": "2.0", "id": n, "method": method, "params": params}


async def test_mcp_initialize_and_tools_list_spend_the_read_budget(
    database_url: str, data_dir: Path, auth_for: Headers
) -> None:
    settings = make_settings(database_url, data_dir, read_rate_limit_requests=3)
    me = {**auth_for("alice"), **MCP_HEADERS}
    async with running_app(create_app(settings)) as client:
        r = await client.post("/mcp", json=_mcp("initialize", 1), headers=me)
        assert r.status_code == 200, r.text
        for n in range(2):
            r = await client.post("/mcp", json=_mcp("tools/list", n + 2), headers=me)
            assert r.status_code == 200 and r.json()["result"]["tools"]
        r = await client.post("/mcp", json=_mcp("tools/list", 9), headers=me)
        assert r.status_code == 429 and r.json()["code"] == "rate_limited"
        assert int(r.headers["retry-after"]) >= 1
        # One budget with the REST reads; another user's is untouched.
        assert (await client.get("/api/tasks", headers=me)).status_code == 429
        other = {**auth_for("bob"), **MCP_HEADERS}
        r = await client.post("/mcp", json=_mcp("tools/list", 1), headers=other)
        assert r.status_code == 200


async def test_chatkit_health_spends_the_read_budget(
    database_url: str, data_dir: Path, auth_for: Headers
) -> None:
    settings = make_settings(database_url, data_dir, read_rate_limit_requests=2)
    me = auth_for("alice")
    async with running_app(create_app(settings)) as client:
        for _ in range(2):
            assert (await client.get("/api/chatkit/health", headers=me)).status_code == 200
        r = await client.get("/api/chatkit/health", headers=me)
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert (await client.get("/api/tasks", headers=me)).status_code == 429
