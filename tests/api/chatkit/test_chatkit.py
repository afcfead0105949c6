"""The ChatKit endpoint, driven the way ChatKit does: chatkit.types requests in, SSE events back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from agents.testing import ScriptedModel, assistant_message, function_call
from chatkit.types import (
    ErrorEvent,
    InferenceOptions,
    ItemsListParams,
    ItemsListReq,
    Thread,
    ThreadAddUserMessageParams,
    ThreadCreateParams,
    ThreadDeleteParams,
    ThreadGetByIdParams,
    ThreadItemUpdatedEvent,
    ThreadListParams,
    ThreadRetryAfterItemParams,
    ThreadsAddUserMessageReq,
    ThreadsCreateReq,
    ThreadsDeleteReq,
    ThreadsGetByIdReq,
    ThreadsListReq,
    ThreadsRetryAfterItemReq,
    ThreadsUpdateReq,
    ThreadUpdateParams,
    UserMessageInput,
    UserMessageTextContent,
)

from backend.core.config import Settings
from backend.main import create_app
from tests.support.app import LIVE_STATES, make_settings, running_app, serving
from tests.support.clients import (
    EVENTS,
    ITEMS,
    THREADS,
    add_message,
    call,
    done_items,
    list_items,
    stream,
    user_input,
)
from tests.support.fakes import GatedModel
from tests.support.stub_llm import StubLLM


@pytest.fixture
def model() -> ScriptedModel:
    return ScriptedModel()


@pytest.fixture
async def ck(settings: Settings, model: ScriptedModel) -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(create_app(settings, model=model)) as client:
        yield client


async def test_create_thread_with_a_tool_turn(
    ck: httpx.AsyncClient, model: ScriptedModel, alice: dict[str, str]
) -> None:
    model.extend(
        [
            [function_call("add_task", {"title": "Buy milk"}, call_id="c1")],
            [assistant_message("Added 'Buy milk'.")],
        ]
    )
    events = await stream(
        ck,
        ThreadsCreateReq(params=ThreadCreateParams(input=user_input("add a task to buy milk"))),
        alice,
    )
    types = [e.type for e in events]
    assert types[0] == "thread.created"
    assert "progress_update" in types  # the tool call is visible to the user
    thread_id = events[0].thread.id
    reply = done_items(events, "assistant_message")
    assert [c.text for c in reply[0].content] == ["Added 'Buy milk'."]
    assert reply[0].id != "__fake_id__" and len(reply[0].id) > 20
    tasks = (await ck.get("/api/tasks", headers=alice)).json()["tasks"]
    assert [t["title"] for t in tasks] == ["Buy milk"]
    # title from the first message; the same conversation through the REST API, with the tool call
    thread = Thread.model_validate_json(
        (
            await call(
                ck, ThreadsGetByIdReq(params=ThreadGetByIdParams(thread_id=thread_id)), alice
            )
        ).text
    )
    assert thread.title == "add a task to buy milk"
    conv = (await ck.get(f"/api/conversations/{thread_id}", headers=alice)).json()
    assert [m["role"] for m in conv["messages"]] == ["user", "assistant"]
    assert conv["messages"][1]["tool_calls"][0]["tool"] == "add_task"


async def test_continue_chatkit_thread_through_api_chat_and_back(
    ck: httpx.AsyncClient, model: ScriptedModel, alice: dict[str, str]
) -> None:
    model.extend(
        [
            [function_call("add_task", {"title": "Walk dog"}, call_id="c1")],
            [assistant_message("Added.")],
        ]
    )
    events = await stream(
        ck, ThreadsCreateReq(params=ThreadCreateParams(input=user_input("add walk dog"))), alice
    )
    thread_id = events[0].thread.id
    model.enqueue([assistant_message("You added Walk dog.")])
    r = await ck.post(
        "/api/chat",
        json={"message": "what did I add?", "conversation_id": thread_id},
        headers=alice,
    )
    assert r.status_code == 200
    sent = model.calls[-1].input
    assert [i.get("type") or i.get("role") for i in sent] == [
        "user",
        "function_call",
        "function_call_output",
        "assistant",
        "user",
    ]
    items = ITEMS.validate_json(
        (
            await call(
                ck, ItemsListReq(params=ItemsListParams(thread_id=thread_id, order="asc")), alice
            )
        ).text
    )
    texts = [(i.type, (i.content[0].text if i.content else "")) for i in items.data]
    assert texts == [
        ("user_message", "add walk dog"),
        ("assistant_message", "Added."),
        ("user_message", "what did I add?"),
        ("assistant_message", "You added Walk dog."),
    ]
    # and a conversation started by /api/chat is a thread too
    model.enqueue([assistant_message("hello")])
    cid = (await ck.post("/api/chat", json={"message": "hi"}, headers=alice)).json()[
        "conversation_id"
    ]
    listed = THREADS.validate_json(
        (await call(ck, ThreadsListReq(params=ThreadListParams()), alice)).text
    )
    assert cid in [t.id for t in listed.data] and thread_id in [t.id for t in listed.data]


async def test_pagination_rename_delete(
    ck: httpx.AsyncClient, model: ScriptedModel, alice: dict[str, str]
) -> None:
    ids = []
    for n in range(3):
        model.enqueue([assistant_message(f"reply {n}")])
        ids.append(
            (
                await stream(
                    ck,
                    ThreadsCreateReq(params=ThreadCreateParams(input=user_input(f"thread {n}"))),
                    alice,
                )
            )[0].thread.id
        )
    thread_id = ids[0]
    for n in range(2):
        model.enqueue([assistant_message(f"more {n}")])
        await stream(
            ck,
            ThreadsAddUserMessageReq(
                params=ThreadAddUserMessageParams(
                    thread_id=thread_id, input=user_input(f"next {n}")
                )
            ),
            alice,
        )

    # threads: newest activity first, two per page
    seen, after = [], None
    while True:
        page = THREADS.validate_json(
            (
                await call(ck, ThreadsListReq(params=ThreadListParams(limit=2, after=after)), alice)
            ).text
        )
        seen += [t.id for t in page.data]
        if not page.has_more:
            break
        after = page.after
    assert seen == [ids[0], ids[2], ids[1]]
    asc = THREADS.validate_json(
        (await call(ck, ThreadsListReq(params=ThreadListParams(order="asc")), alice)).text
    )
    assert [t.id for t in asc.data] == list(reversed(seen))

    # items: 6 in the thread, pages of 4 in both orders
    first = ITEMS.validate_json(
        (
            await call(
                ck,
                ItemsListReq(params=ItemsListParams(thread_id=thread_id, limit=4, order="asc")),
                alice,
            )
        ).text
    )
    rest = ITEMS.validate_json(
        (
            await call(
                ck,
                ItemsListReq(
                    params=ItemsListParams(
                        thread_id=thread_id, limit=4, order="asc", after=first.after
                    )
                ),
                alice,
            )
        ).text
    )
    texts = [i.content[0].text for i in first.data + rest.data]
    assert texts == ["thread 0", "reply 0", "next 0", "more 0", "next 1", "more 1"]
    assert first.has_more and not rest.has_more
    desc = ITEMS.validate_json(
        (
            await call(
                ck,
                ItemsListReq(params=ItemsListParams(thread_id=thread_id, limit=2, order="desc")),
                alice,
            )
        ).text
    )
    assert [i.content[0].text for i in desc.data] == ["more 1", "next 1"]

    r = await call(
        ck, ThreadsUpdateReq(params=ThreadUpdateParams(thread_id=thread_id, title="Renamed")), alice
    )
    assert r.status_code == 200 and Thread.model_validate_json(r.text).title == "Renamed"
    assert (await ck.get(f"/api/conversations/{thread_id}", headers=alice)).json()[
        "title"
    ] == "Renamed"
    assert (
        await call(ck, ThreadsDeleteReq(params=ThreadDeleteParams(thread_id=thread_id)), alice)
    ).status_code == 200
    assert (
        await call(ck, ThreadsGetByIdReq(params=ThreadGetByIdParams(thread_id=thread_id)), alice)
    ).status_code == 404


async def test_two_users_isolated(
    ck: httpx.AsyncClient, model: ScriptedModel, alice: dict[str, str], bob: dict[str, str]
) -> None:
    model.enqueue([assistant_message("hi alice")])
    thread_id = (
        await stream(
            ck, ThreadsCreateReq(params=ThreadCreateParams(input=user_input("secret"))), alice
        )
    )[0].thread.id
    for req in (
        ThreadsGetByIdReq(params=ThreadGetByIdParams(thread_id=thread_id)),
        ItemsListReq(params=ItemsListParams(thread_id=thread_id)),
        ThreadsUpdateReq(params=ThreadUpdateParams(thread_id=thread_id, title="mine")),
        ThreadsDeleteReq(params=ThreadDeleteParams(thread_id=thread_id)),
        ThreadsAddUserMessageReq(
            params=ThreadAddUserMessageParams(thread_id=thread_id, input=user_input("let me in"))
        ),
    ):
        r = await call(ck, req, bob)
        assert r.status_code == 404, (req.type, r.text)
        assert r.json()["code"] == "thread_not_found"
    listed = THREADS.validate_json(
        (await call(ck, ThreadsListReq(params=ThreadListParams()), bob)).text
    )
    assert listed.data == []
    items = ITEMS.validate_json(
        (
            await call(
                ck, ItemsListReq(params=ItemsListParams(thread_id=thread_id, order="asc")), alice
            )
        ).text
    )
    assert [i.type for i in items.data] == [
        "user_message",
        "assistant_message",
    ]  # nothing of bob's got in
    assert model.remaining_steps == 0


async def test_bad_requests(ck: httpx.AsyncClient, alice: dict[str, str]) -> None:
    r = await ck.post("/api/chatkit", json={"type": "threads.list", "params": {}})
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    for body in (
        b"{not json",
        b'{"type": "threads.fly", "params": {}}',
        b'{"type": "threads.get_by_id", "params": {}}',
    ):
        r = await ck.post(
            "/api/chatkit", content=body, headers={**alice, "content-type": "application/json"}
        )
        assert r.status_code == 400 and r.json()["code"] == "bad_request", body
    r = await call(
        ck, ThreadsGetByIdReq(params=ThreadGetByIdParams(thread_id="thr_unknown")), alice
    )
    assert r.status_code == 404
    attach = UserMessageInput(
        content=[UserMessageTextContent(text="x")],
        attachments=["atc_1"],
        inference_options=InferenceOptions(),
    )
    r = await call(ck, ThreadsCreateReq(params=ThreadCreateParams(input=attach)), alice)
    assert r.status_code == 400 and r.json()["code"] == "attachments_not_supported"


async def test_health_names_the_model(settings: Settings, alice: dict[str, str]) -> None:
    async with running_app(create_app(settings)) as client:
        r = await client.get("/api/chatkit/health", headers=alice)
        assert r.json() == {"store": "postgres", "model": "offline-rules", "status": "ok"}


async def test_second_turn_through_a_chat_completions_stub(
    database_url: str, data_dir: Path, alice: dict[str, str]
) -> None:
    async with StubLLM() as stub:
        settings = make_settings(
            database_url,
            data_dir,
            llm_base_url=stub.base_url,
            llm_api_key="k",
            llm_model="stub-model",
            llm_max_retries=0,
        )
        async with running_app(create_app(settings)) as client:
            stub.script(
                {"tool_calls": [{"name": "add_task", "arguments": {"title": "Pay rent"}}]},
                {"text": "Added Pay rent."},
            )
            events = await stream(
                client,
                ThreadsCreateReq(params=ThreadCreateParams(input=user_input("add pay rent"))),
                alice,
            )
            thread_id = events[0].thread.id
            first_reply = done_items(events, "assistant_message")[0]
            stub.script({"text": "You have one task: Pay rent."})
            events = await stream(
                client,
                ThreadsAddUserMessageReq(
                    params=ThreadAddUserMessageParams(
                        thread_id=thread_id, input=user_input("what do I have?")
                    )
                ),
                alice,
            )
            assert "error" not in [e.type for e in events]
            second_reply = done_items(events, "assistant_message")[0]
            assert second_reply.content[0].text == "You have one task: Pay rent."
            assert second_reply.id != first_reply.id  # no "__fake_id__" overwrite
            messages = stub.requests[-1]["messages"]
            assert [m["role"] for m in messages] == [
                "system",
                "user",
                "assistant",
                "tool",
                "assistant",
                "user",
            ]
            assert messages[4] == {"role": "assistant", "content": "Added Pay rent."}
            items = ITEMS.validate_json(
                (
                    await call(
                        client,
                        ItemsListReq(params=ItemsListParams(thread_id=thread_id, order="asc")),
                        alice,
                    )
                ).text
            )
            assert [i.type for i in items.data] == [
                "user_message",
                "assistant_message",
                "user_message",
                "assistant_message",
            ]
            # a provider failure is an error event, and the thread stays usable
            stub.script({"status": 500})
            events = await stream(
                client,
                ThreadsAddUserMessageReq(
                    params=ThreadAddUserMessageParams(
                        thread_id=thread_id, input=user_input("again")
                    )
                ),
                alice,
            )
            assert events[-1].type == "error"
            stub.script({"text": "ok now"})
            events = await stream(
                client,
                ThreadsAddUserMessageReq(
                    params=ThreadAddUserMessageParams(
                        thread_id=thread_id, input=user_input("retry")
                    )
                ),
                alice,
            )
            assert done_items(events, "assistant_message")[0].content[0].text == "ok now"


async def test_replies_around_tool_calls_replay_in_order_through_api_chat(
    ck: httpx.AsyncClient, model: ScriptedModel, alice: dict[str, str]
) -> None:
    # "Let me check", a tool call, then the answer: two replies in one turn
    model.extend(
        [
            [
                assistant_message("Let me check."),
                function_call("list_tasks", {"status": "all"}, call_id="c1"),
            ],
            [assistant_message("You have no tasks.")],
        ]
    )
    events = await stream(
        ck, ThreadsCreateReq(params=ThreadCreateParams(input=user_input("my tasks?"))), alice
    )
    thread_id = events[0].thread.id
    replies = done_items(events, "assistant_message")
    assert [r.content[0].text for r in replies] == ["Let me check.\n\nYou have no tasks."]
    streamed = "".join(
        e.update.delta
        for e in events
        if isinstance(e, ThreadItemUpdatedEvent) and hasattr(e.update, "delta")
    )
    assert streamed == "Let me check.\n\nYou have no tasks."  # the stream says what is stored
    conv = (await ck.get(f"/api/conversations/{thread_id}", headers=alice)).json()
    assert [(m["role"], bool(m["tool_calls"])) for m in conv["messages"]] == [
        ("user", False),
        ("assistant", True),
    ]
    model.enqueue([assistant_message("ok")])
    r = await ck.post(
        "/api/chat", json={"message": "thanks", "conversation_id": thread_id}, headers=alice
    )
    assert r.status_code == 200, r.text
    sent = model.calls[-1].input
    assert [i.get("type") or i.get("role") for i in sent] == [
        "user",
        "assistant",
        "function_call",
        "function_call_output",
        "assistant",
        "user",
    ]  # each message once, in the order they happened


async def test_text_rules_and_rename_rules(
    ck: httpx.AsyncClient, model: ScriptedModel, alice: dict[str, str]
) -> None:
    for text in ("   ", "x" * 8001, "nul\x00"):
        r = await call(
            ck, ThreadsCreateReq(params=ThreadCreateParams(input=user_input(text))), alice
        )
        assert r.status_code == 422, text
        assert r.json()["errors"][0]["field"] == "input.content"
    assert (await ck.get("/api/conversations", headers=alice)).json()["conversations"] == []
    model.enqueue([assistant_message("hi")])
    thread_id = (
        await stream(ck, ThreadsCreateReq(params=ThreadCreateParams(input=user_input("hi"))), alice)
    )[0].thread.id
    for title in ("  ", "t" * 201):
        r = await call(
            ck, ThreadsUpdateReq(params=ThreadUpdateParams(thread_id=thread_id, title=title)), alice
        )
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "title"
    r = await call(
        ck,
        ThreadsUpdateReq(params=ThreadUpdateParams(thread_id=thread_id, title="  Two   words ")),
        alice,
    )
    assert Thread.model_validate_json(r.text).title == "Two words"


async def wait_idle(app: Any) -> None:
    for _ in range(200):
        if not LIVE_STATES[app].chat.background:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the turn did not finish")


async def test_one_turn_at_a_time_and_stopping_keeps_what_the_tools_did(
    settings: Settings, alice: dict[str, str]
) -> None:
    model = GatedModel(
        [
            [function_call("add_task", {"title": "Walk the dog"}, call_id="c1")],
            [assistant_message("Added it.")],
        ],
        gated_call=2,
    )
    app = create_app(settings, model=model)
    req = ThreadsCreateReq(params=ThreadCreateParams(input=user_input("add walk the dog")))
    async with serving(app) as base_url, httpx.AsyncClient(base_url=base_url) as http:
        async with http.stream(
            "POST",
            "/api/chatkit",
            content=req.model_dump_json(),
            headers={**alice, "content-type": "application/json"},
        ) as r:
            lines = r.aiter_lines()
            created = EVENTS.validate_json((await anext(lines))[6:])
            thread_id = created.thread.id
            await asyncio.wait_for(model.entered.wait(), 5)  # the tool ran; the model thinks
            # the new thread is claimed by its turn, in both APIs
            busy = await call(http, add_message(thread_id, "and another"), alice)
            assert busy.status_code == 409 and busy.json()["code"] == "turn_in_progress"
            busy = await http.post(
                "/api/chat", json={"message": "x", "conversation_id": thread_id}, headers=alice
            )
            assert busy.status_code == 409
        # the client left (ChatKit's stop button): the run stops, its tool call is kept
        await wait_idle(app)
        assert model.remaining_steps == 1  # the gated answer was never produced
        conv = (await http.get(f"/api/conversations/{thread_id}", headers=alice)).json()
        assert conv["title"] == "add walk the dog"
        assistant = [m for m in conv["messages"] if m["role"] == "assistant"]
        assert [c["tool"] for c in assistant[0]["tool_calls"]] == ["add_task"]
        items = await list_items(http, thread_id, alice)
        assert [i.type for i in items] == ["user_message", "assistant_message"]
        # and the thread is free again
        model.gate.set()
        events = [
            EVENTS.validate_json(line[6:])
            for line in (
                await call(http, add_message(thread_id, "thanks"), alice)
            ).text.splitlines()
            if line.startswith("data: ")
        ]
        assert done_items(events, "assistant_message")[0].content[0].text == "Added it."
        tasks = (await http.get("/api/tasks", headers=alice)).json()["tasks"]
        assert [t["title"] for t in tasks] == ["Walk the dog"]


async def test_failures_leave_nothing_half_stored(
    database_url: str, data_dir: Path, alice: dict[str, str]
) -> None:
    async with StubLLM() as stub:
        settings = make_settings(
            database_url,
            data_dir,
            llm_base_url=stub.base_url,
            llm_api_key="k",
            llm_model="stub-model",
            llm_max_retries=0,
            chat_timeout_seconds=1,
        )
        app = create_app(settings)
        async with running_app(app) as client:
            stub.script("hello")
            thread_id = (
                await stream(
                    client,
                    ThreadsCreateReq(params=ThreadCreateParams(input=user_input("hi"))),
                    alice,
                )
            )[0].thread.id

            # the model fails before any tool ran: the message is taken back
            stub.script({"status": 500})
            events = await stream(client, add_message(thread_id, "first try"), alice)
            user_id = done_items(events, "user_message")[0].id
            assert [e.type for e in events][-2:] == ["thread.item.removed", "error"]
            assert events[-2].item_id == user_id
            assert isinstance(events[-1], ErrorEvent) and not events[-1].allow_retry
            assert "not saved" in (events[-1].message or "")

            # the model hangs past CHAT_TIMEOUT_SECONDS: the same, with a timeout message
            stub.script({"hang": 5})
            events = await stream(client, add_message(thread_id, "second try"), alice)
            assert events[-1].type == "error" and "in time" in (events[-1].message or "")
            await wait_idle(app)
            assert [i.type for i in await list_items(client, thread_id, alice)] == [
                "user_message",
                "assistant_message",
            ]

            # it fails after a tool changed tasks: the turn is kept, with the tool call
            stub.script(
                {"tool_calls": [{"name": "add_task", "arguments": {"title": "Pay rent"}}]},
                {"status": 500},
            )
            events = await stream(client, add_message(thread_id, "add pay rent"), alice)
            assert events[-1].type == "error"
            note = done_items(events, "assistant_message")[-1]
            assert "interrupted" in note.content[0].text
            conv = (await client.get(f"/api/conversations/{thread_id}", headers=alice)).json()
            assert [(m["role"], m["content"]) for m in conv["messages"]][-2:] == [
                ("user", "add pay rent"),
                ("assistant", note.content[0].text),
            ]
            assert conv["messages"][-1]["tool_calls"][0]["arguments"] == {"title": "Pay rent"}

            # and the thread goes on, the model seeing that tool call in its history
            stub.script("You have Pay rent.")
            events = await stream(client, add_message(thread_id, "what now?"), alice)
            assert (
                done_items(events, "assistant_message")[0].content[0].text == "You have Pay rent."
            )
            roles = [m["role"] for m in stub.requests[-1]["messages"]]
            assert roles == [
                "system",
                "user",
                "assistant",
                "user",
                "assistant",
                "tool",
                "assistant",
                "user",
            ]


async def test_retry_replaces_the_reply(
    ck: httpx.AsyncClient, model: ScriptedModel, alice: dict[str, str]
) -> None:
    model.enqueue([assistant_message("first answer")])
    events = await stream(
        ck, ThreadsCreateReq(params=ThreadCreateParams(input=user_input("hello"))), alice
    )
    thread_id = events[0].thread.id
    user_item = done_items(events, "user_message")[0]
    model.enqueue([assistant_message("second answer")])
    events = await stream(
        ck,
        ThreadsRetryAfterItemReq(
            params=ThreadRetryAfterItemParams(thread_id=thread_id, item_id=user_item.id)
        ),
        alice,
    )
    assert done_items(events, "assistant_message")[0].content[0].text == "second answer"
    items = await list_items(ck, thread_id, alice)
    assert [(i.type, i.content[0].text) for i in items] == [
        ("user_message", "hello"),
        ("assistant_message", "second answer"),
    ]
    assert [m.input[-1]["content"] for m in model.calls] == ["hello", "hello"]  # type: ignore[index]
