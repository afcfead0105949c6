"""Conversation endpoints and the history window, on rows written straight into PostgreSQL."""

from __future__ import annotations

import uuid

import httpx
import orjson
from agents.testing import ScriptedModel, assistant_message
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.agent.context import Call
from backend.chat import claim
from backend.chat.history import count_tokens
from backend.chat.journal import TurnJournal
from backend.core.config import Settings
from backend.main import create_app
from tests.support.app import make_settings, running_app


async def _conversation(
    engine: AsyncEngine, user: str, n_messages: int, *, words: int = 5
) -> uuid.UUID:
    cid = uuid.uuid4()
    async with engine.begin() as conn:
        await conn.execute(
            text("INSERT INTO conversations (id, user_id, title) VALUES (:id, :u, 'seeded')"),
            {"id": cid, "u": user},
        )
        for i in range(n_messages):
            content = f"message {i} " + "word " * words
            await conn.execute(
                text(
                    "INSERT INTO messages (conversation_id, user_id, role, content, token_count) "
                    "VALUES (:c, :u, :r, :t, :n)"
                ),
                {
                    "c": cid,
                    "u": user,
                    "r": "user" if i % 2 == 0 else "assistant",
                    "t": content,
                    "n": count_tokens(content),
                },
            )
    return cid


async def test_history_window_respects_message_cap_and_token_budget(
    engine: AsyncEngine, database_url: str, data_dir, alice: dict[str, str]
) -> None:
    cid = await _conversation(engine, "alice", 400, words=20)
    model = ScriptedModel()
    settings = make_settings(
        database_url, data_dir, history_max_messages=30, history_token_budget=100_000
    )
    async with running_app(create_app(settings, model=model)) as client:
        model.enqueue([assistant_message("ok")])
        r = await client.post(
            "/api/chat", json={"message": "next", "conversation_id": str(cid)}, headers=alice
        )
        assert r.status_code == 200, r.text
    sent = model.calls[0].input
    assert isinstance(sent, list)
    # the newest 30 stored messages (starting at a user message: 29), then the new one
    assert sent[-1] == {"role": "user", "content": "next"}
    assert sent[0]["role"] == "user"
    assert len(sent) - 1 in (29, 30)
    assert sent[-2]["content"].startswith("message 399 ")

    per_message = count_tokens("message 399 " + "word " * 20)
    budget = per_message * 10
    model = ScriptedModel()
    settings = make_settings(
        database_url, data_dir, history_max_messages=100, history_token_budget=budget
    )
    async with running_app(create_app(settings, model=model)) as client:
        model.enqueue([assistant_message("ok")])
        r = await client.post(
            "/api/chat", json={"message": "again", "conversation_id": str(cid)}, headers=alice
        )
        assert r.status_code == 200
    sent = model.calls[0].input
    assert isinstance(sent, list)
    history = sent[:-1]
    assert 8 <= len(history) <= 10
    assert sum(count_tokens(m["content"]) for m in history) <= budget


async def test_list_paginate_rename_delete(
    client: httpx.AsyncClient, engine: AsyncEngine, alice: dict[str, str], bob: dict[str, str]
) -> None:
    ids = [await _conversation(engine, "alice", 3) for _ in range(5)]
    await _conversation(engine, "bob", 1)
    # make the order deterministic: later ids were updated later
    async with engine.begin() as conn:
        for n, cid in enumerate(ids):
            await conn.execute(
                text(
                    "UPDATE conversations SET updated_at = now() + make_interval(secs => :n) WHERE id = :id"
                ),
                {"n": n, "id": cid},
            )
    seen: list[str] = []
    after = None
    while True:
        params = {"limit": 2, **({"after": after} if after else {})}
        page = (await client.get("/api/conversations", params=params, headers=alice)).json()
        seen += [c["id"] for c in page["conversations"]]
        after = page["next_cursor"]
        if after is None:
            break
    assert seen == [str(c) for c in reversed(ids)]

    r = await client.get(f"/api/conversations/{ids[0]}", params={"limit": 2}, headers=alice)
    body = r.json()
    assert [m["content"].split()[1] for m in body["messages"]] == ["0", "1"]
    r = await client.get(
        f"/api/conversations/{ids[0]}",
        params={"limit": 2, "after": body["next_cursor"]},
        headers=alice,
    )
    assert [m["content"].split()[1] for m in r.json()["messages"]] == ["2"] and r.json()[
        "next_cursor"
    ] is None

    r = await client.patch(
        f"/api/conversations/{ids[0]}", json={"title": "  Groceries  "}, headers=alice
    )
    assert r.status_code == 200 and r.json()["title"] == "Groceries"
    r = await client.patch(f"/api/conversations/{ids[0]}", json={"title": " "}, headers=alice)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "title"

    assert (await client.delete(f"/api/conversations/{ids[0]}", headers=alice)).status_code == 204
    assert (await client.get(f"/api/conversations/{ids[0]}", headers=alice)).status_code == 404
    async with engine.connect() as conn:
        left = (
            await conn.execute(
                text("SELECT count(*) FROM messages WHERE conversation_id = :c"), {"c": ids[0]}
            )
        ).scalar()
    assert left == 0

    r = await client.get("/api/conversations", params={"after": str(uuid.uuid4())}, headers=alice)
    assert r.status_code == 404
    r = await client.get("/api/conversations", params={"limit": 0}, headers=alice)
    assert r.status_code == 422


async def test_turn_cost_query_is_bounded(engine: AsyncEngine, settings: Settings) -> None:
    """The history query reads at most HISTORY_MAX_MESSAGES rows, whatever the conversation's length."""
    cid = await _conversation(engine, "alice", 600)
    async with engine.connect() as conn:
        # One conversation of 600 rows is a table a scan reads as cheaply as the index: the
        # planner's choice would depend on leftover statistics. The index path is the one a
        # large table takes, and the one whose rows the query's LIMIT must bound.
        await conn.execute(text("SET LOCAL enable_seqscan = off"))
        await conn.execute(text("SET LOCAL enable_bitmapscan = off"))
        plan = (
            await conn.execute(
                text(
                    "EXPLAIN (ANALYZE, FORMAT JSON) SELECT id FROM (SELECT id, sum(token_count) OVER (ORDER BY id DESC) r "
                    "FROM (SELECT id, token_count FROM messages WHERE conversation_id = :c ORDER BY id DESC LIMIT 100) n) w"
                ),
                {"c": cid},
            )
        ).scalar_one()

    def max_rows(node: dict) -> int:
        return max([int(node.get("Actual Rows", 0))] + [max_rows(p) for p in node.get("Plans", [])])

    assert max_rows(plan[0]["Plan"]) <= 100


async def test_a_tool_call_of_a_turn_whose_rows_were_swept_is_still_recorded(
    engine: AsyncEngine,
) -> None:
    """A turn that outlived its claim (a stalled process) finds its hidden rows swept by the
    next turn; a task change it still makes is recorded on a reply of its own, interrupted."""
    auto = engine.execution_options(isolation_level="AUTOCOMMIT")
    cid, turn = uuid.uuid4(), uuid.uuid4()
    started = await claim.start_turn(
        auto,
        user_id="erin",
        conversation_id=cid,
        create=True,
        title="t",
        turn=turn,
        lock_seconds=30,
        user_content="add milk",
        user_tokens=3,
        user_item_id=None,
        user_item=None,
        reply_item_id="msg_r",
        adopt=False,
        max_messages=100,
        token_budget=8000,
        max_active=4,
    )
    async with auto.connect() as conn:  # what the next turn's claim sweeps
        await conn.execute(text("DELETE FROM messages WHERE conversation_id = :c"), {"c": cid})
    journal = TurnJournal(
        engine=auto,
        user_id="erin",
        max_tasks=1000,
        conversation_id=cid,
        turn=turn,
        user_row=started.user_row,
        reply_row=started.reply_row,
    )
    item = {"type": "function_call", "call_id": "c1", "name": "add_task", "arguments": "{}"}
    output = await journal.run(Call("add_task", {"title": "Milk"}, item), 16_000)
    assert output is not None and orjson.loads(output)["title"] == "Milk"
    async with auto.connect() as conn:
        rows = (
            await conn.execute(
                text("SELECT role, status, tool_calls FROM messages WHERE conversation_id = :c"),
                {"c": cid},
            )
        ).all()
    [(role, status, tool_calls)] = rows
    assert (role, status) == ("assistant", "interrupted")
    assert tool_calls[0]["tool"] == "add_task" and tool_calls[0]["result"]["title"] == "Milk"
