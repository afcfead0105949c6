"""Rate limits, idempotent retries and one-turn-at-a-time, on real PostgreSQL (and Redis)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from agents.testing import ScriptedModel, assistant_message, function_call

from backend.main import create_app
from tests.support.app import make_settings, running_app
from tests.support.fakes import GatedModel, redis_up


@pytest.mark.parametrize("backend", ["postgres", "redis"])
async def test_rate_limit_per_user(
    database_url: str, data_dir: Path, alice: dict[str, str], bob: dict[str, str], backend: str
) -> None:
    extra: dict[str, Any] = {}
    if backend == "redis":
        if not redis_up():
            pytest.skip("no Redis on 127.0.0.1:6379")
        extra["redis_url"] = "redis://127.0.0.1:6379/0"
    settings = make_settings(
        database_url, data_dir, rate_limit_requests=3, rate_limit_window_seconds=3600, **extra
    )
    model = ScriptedModel([[assistant_message("ok")] for _ in range(4)])
    # unique users so Redis keys from earlier runs cannot interfere
    alice_id, bob_id = f"alice-{uuid.uuid4().hex[:6]}", f"bob-{uuid.uuid4().hex[:6]}"
    from backend.auth.devkeys import load_or_create_dev_key, mint_token

    key = load_or_create_dev_key(data_dir)
    a = {"Authorization": f"Bearer {mint_token(key, alice_id)}"}
    b = {"Authorization": f"Bearer {mint_token(key, bob_id)}"}
    async with running_app(create_app(settings, model=model)) as client:
        for _ in range(3):
            assert (
                await client.post("/api/chat", json={"message": "hi"}, headers=a)
            ).status_code == 200
        r = await client.post("/api/chat", json={"message": "hi"}, headers=a)
        assert r.status_code == 429
        assert r.json()["code"] == "rate_limited"
        assert 1 <= int(r.headers["retry-after"]) <= 3600
        r = await client.post("/api/chat", json={"message": "hi", "stream": True}, headers=a)
        assert r.status_code == 429
        # another user is unaffected; reads have their own budget
        assert (
            await client.post("/api/chat", json={"message": "hi"}, headers=b)
        ).status_code == 200
        assert (await client.get("/api/tasks", headers=a)).status_code == 200


async def test_idempotent_chat_runs_once(
    database_url: str, data_dir: Path, alice: dict[str, str]
) -> None:
    model = ScriptedModel(
        [
            [function_call("add_task", {"title": "Pay rent"}, call_id="c1")],
            [assistant_message("Added.")],
        ]
    )
    async with running_app(
        create_app(make_settings(database_url, data_dir), model=model)
    ) as client:
        headers = {**alice, "Idempotency-Key": "key-1"}
        first = await client.post("/api/chat", json={"message": "add pay rent"}, headers=headers)
        again = await client.post("/api/chat", json={"message": "add pay rent"}, headers=headers)
        assert first.status_code == again.status_code == 200
        assert again.json() == first.json()
        assert again.headers["idempotent-replayed"] == "true"
        assert len(model.calls) == 2  # the model ran for the first request only
        assert len((await client.get("/api/tasks", headers=alice)).json()["tasks"]) == 1
        conv = (
            await client.get(f"/api/conversations/{first.json()['conversation_id']}", headers=alice)
        ).json()
        assert len(conv["messages"]) == 2

        r = await client.post("/api/chat", json={"message": "something else"}, headers=headers)
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "Idempotency-Key"
        r = await client.post(
            "/api/chat", json={"message": "x"}, headers={**alice, "Idempotency-Key": "bad key\t"}
        )
        assert r.status_code == 422


async def test_idempotent_concurrent_requests_run_once(
    database_url: str, data_dir: Path, alice: dict[str, str]
) -> None:
    model = GatedModel(
        [
            [function_call("add_task", {"title": "Once"}, call_id="c1")],
            [assistant_message("Added.")],
        ]
    )
    async with running_app(
        create_app(make_settings(database_url, data_dir), model=model)
    ) as client:
        headers = {**alice, "Idempotency-Key": "same"}
        first = asyncio.create_task(
            client.post("/api/chat", json={"message": "add once"}, headers=headers)
        )
        await asyncio.wait_for(model.entered.wait(), 5)
        second = asyncio.create_task(
            client.post("/api/chat", json={"message": "add once"}, headers=headers)
        )
        await asyncio.sleep(0.3)
        assert not second.done()  # waits for the first instead of running again
        model.gate.set()
        r1, r2 = await asyncio.gather(first, second)
        assert r1.status_code == r2.status_code == 200 and r1.json() == r2.json()
        assert [
            t["title"] for t in (await client.get("/api/tasks", headers=alice)).json()["tasks"]
        ] == ["Once"]


async def test_idempotent_task_creation(
    client: httpx.AsyncClient, alice: dict[str, str], bob: dict[str, str]
) -> None:
    h = {**alice, "Idempotency-Key": "create-1"}
    r1 = await client.post("/api/tasks", json={"title": "Only once"}, headers=h)
    r2 = await client.post("/api/tasks", json={"title": "Only once"}, headers=h)
    assert r1.status_code == r2.status_code == 201 and r1.json() == r2.json()
    # the same key for another user is another key
    r3 = await client.post(
        "/api/tasks", json={"title": "Only once"}, headers={**bob, "Idempotency-Key": "create-1"}
    )
    assert r3.status_code == 201 and r3.json()["id"] == r1.json()["id"] == 1  # each user's first
    assert len((await client.get("/api/tasks", headers=alice)).json()["tasks"]) == 1
    assert len((await client.get("/api/tasks", headers=bob)).json()["tasks"]) == 1
    r4 = await client.post("/api/tasks", json={"title": "Different"}, headers=h)
    assert r4.status_code == 422
    # a failed request does not poison its key
    bad = {**alice, "Idempotency-Key": "create-2"}
    assert (await client.post("/api/tasks", json={"title": ""}, headers=bad)).status_code == 422
    assert (await client.post("/api/tasks", json={"title": ""}, headers=bad)).status_code == 422


async def test_one_turn_at_a_time_per_conversation(
    database_url: str, data_dir: Path, alice: dict[str, str]
) -> None:
    model = GatedModel([[assistant_message("first")]])
    async with running_app(
        create_app(make_settings(database_url, data_dir), model=model)
    ) as client:
        model.gate.set()
        cid = (await client.post("/api/chat", json={"message": "start"}, headers=alice)).json()[
            "conversation_id"
        ]
        model.gate.clear()
        model.entered.clear()
        model.extend([[assistant_message("second")], [assistant_message("third")]])
        first = asyncio.create_task(
            client.post("/api/chat", json={"message": "one", "conversation_id": cid}, headers=alice)
        )
        await asyncio.wait_for(model.entered.wait(), 5)
        r = await client.post(
            "/api/chat", json={"message": "two", "conversation_id": cid}, headers=alice
        )
        assert r.status_code == 409
        assert r.json()["code"] == "turn_in_progress"
        model.gate.set()
        assert (await first).status_code == 200
        # once the first turn is stored, the conversation takes the next message
        r = await client.post(
            "/api/chat", json={"message": "three", "conversation_id": cid}, headers=alice
        )
        assert r.status_code == 200 and r.json()["response"] == "third"
        conv = (await client.get(f"/api/conversations/{cid}", headers=alice)).json()
        assert [m["content"] for m in conv["messages"]] == [
            "start",
            "first",
            "one",
            "second",
            "three",
            "third",
        ]


async def test_crashed_turn_claim_expires(
    database_url: str, data_dir: Path, alice: dict[str, str]
) -> None:
    """A process killed mid-turn leaves a claim that lapses; the conversation is usable again."""
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    settings = make_settings(database_url, data_dir, conversation_lock_seconds=1)
    model = ScriptedModel([[assistant_message("a")], [assistant_message("b")]])
    async with running_app(create_app(settings, model=model)) as client:
        cid = (await client.post("/api/chat", json={"message": "x"}, headers=alice)).json()[
            "conversation_id"
        ]
        engine = create_async_engine(database_url)
        async with engine.begin() as conn:  # what a killed process leaves behind
            await conn.execute(
                text(
                    "UPDATE conversations SET active_turn = gen_random_uuid(), active_turn_expires_at = now() + interval '1 minute' WHERE id = :c"
                ),
                {"c": cid},
            )
        r = await client.post(
            "/api/chat", json={"message": "y", "conversation_id": cid}, headers=alice
        )
        assert r.status_code == 409
        async with engine.begin() as conn:  # the minute passes: the dead turn's claim lapses
            await conn.execute(
                text(
                    "UPDATE conversations SET active_turn_expires_at = now() - interval '1 ms' WHERE id = :c"
                ),
                {"c": cid},
            )
        await engine.dispose()
        r = await client.post(
            "/api/chat", json={"message": "y", "conversation_id": cid}, headers=alice
        )
        assert r.status_code == 200 and r.json()["response"] == "b"


class CountingGate(GatedModel):
    """A gated model that counts the calls waiting at its gate."""

    waiting = 0

    async def get_response(self, *args: Any, **kwargs: Any) -> Any:
        self.waiting += 1
        return await super().get_response(*args, **kwargs)


async def test_turns_running_at_once_per_user_are_capped(
    database_url: str, data_dir: Path, alice: dict[str, str], bob: dict[str, str]
) -> None:
    """MAX_ACTIVE_TURNS_PER_USER: one more turn (in another conversation, through any front
    door) answers 429 too_many_turns with Retry-After and leaves nothing; other users are not
    affected; once a turn ends there is room again."""
    settings = make_settings(database_url, data_dir, max_active_turns_per_user=2)
    model = CountingGate([[assistant_message(f"reply {n}")] for n in range(4)])
    chatkit_turn = {
        "type": "threads.create",
        "params": {
            "input": {
                "content": [{"type": "input_text", "text": "hi"}],
                "attachments": [],
                "inference_options": {},
            }
        },
    }
    async with running_app(create_app(settings, model=model)) as client:

        async def say(text: str, headers: dict[str, str]) -> httpx.Response:
            return await client.post("/api/chat", json={"message": text}, headers=headers)

        running = [asyncio.create_task(say(f"turn {n}", alice)) for n in range(2)]
        while model.waiting < 2:  # noqa: ASYNC110 - both turns hold their claims at the gate
            await asyncio.sleep(0.01)
        refused = await say("one too many", alice)
        assert refused.status_code == 429, refused.text
        assert refused.json()["code"] == "too_many_turns"
        assert 1 <= int(refused.headers["retry-after"]) <= 5
        chatkit = await client.post("/api/chatkit", json=chatkit_turn, headers=alice)
        assert chatkit.status_code == 429 and chatkit.json()["code"] == "too_many_turns"
        other = asyncio.create_task(say("bob's turn", bob))  # bob has room
        while model.waiting < 3:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        model.gate.set()
        assert [(await t).status_code for t in running] == [200, 200]
        assert (await other).status_code == 200
        assert (await say("now there is room", alice)).status_code == 200
        listed = (await client.get("/api/conversations", headers=alice)).json()["conversations"]
        assert sorted(c["title"] for c in listed) == ["now there is room", "turn 0", "turn 1"]
