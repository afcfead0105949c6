"""The built-in offline model, run by the real `agents.Runner` with the real task tools on PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from agents import Agent, ModelSettings, ModelTracing, Runner
from chatkit.types import (
    InferenceOptions,
    ThreadCreateParams,
    ThreadsCreateReq,
    ThreadStreamEvent,
    UserMessageInput,
    UserMessageTextContent,
)
from pydantic import TypeAdapter
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.agent.context import TurnContext
from backend.agent.offline import OfflineModel
from backend.agent.tools import task_tools
from backend.chat.journal import Unrecorded
from backend.core.config import Settings
from backend.core.db import create_engine, session_factory
from backend.main import create_app
from backend.tasks import service
from backend.tasks.models import Task
from tests.support.app import running_app

Sessions = async_sessionmaker[AsyncSession]


@pytest.fixture
async def sessions(database_url: str, settings: Settings) -> AsyncIterator[Sessions]:
    engine = create_engine(database_url, settings)
    yield session_factory(engine)
    await engine.dispose()


def context_for(sessions: Sessions, user: str = "alice") -> TurnContext:
    """A turn's context outside a turn (nothing recorded): tools on the autocommit engine."""
    engine = sessions.kw["bind"].execution_options(isolation_level="AUTOCOMMIT")
    return TurnContext(user_id=user, journal=Unrecorded(engine, user, 1000))


@pytest.fixture
def agent() -> Agent[TurnContext]:
    return Agent[TurnContext](
        name="Task assistant",
        instructions="You manage the user's tasks.",
        model=OfflineModel(),
        tools=list(task_tools()),
    )


@dataclass
class Turn:
    reply: str
    tools: list[str]
    ctx: TurnContext
    items: list[Any]
    """The conversation so far, as input for the next turn."""


async def say(
    agent: Agent[TurnContext],
    sessions: Sessions,
    message: str,
    history: list[Any] | None = None,
    user: str = "alice",
) -> Turn:
    ctx = context_for(sessions, user)
    items = [*(history or []), {"role": "user", "content": message}]
    result = await Runner.run(agent, items, context=ctx)
    return Turn(
        reply=result.final_output,
        tools=[c["tool"] for c in ctx.tool_calls],
        ctx=ctx,
        items=result.to_input_list(),
    )


async def add(sessions: Sessions, title: str, user: str = "alice", done: bool = False) -> Task:
    async with sessions.begin() as session:
        task = await service.apply(session, service.create(user, title, None, 1000))
        if done:
            task = await service.apply(session, service.update(user, task.id, completed=True))
        return task


async def tasks_of(sessions: Sessions, user: str = "alice") -> dict[int, tuple[str, bool]]:
    async with sessions.begin() as session:
        return {t.id: (t.title, t.completed) for t in (await service.page(session, user))[0]}


@pytest.mark.parametrize(
    ("message", "title"),
    [
        ("add a task to buy milk", "Buy milk"),
        ("add buy milk", "Buy milk"),
        ("Please add a task to buy milk!", "Buy milk"),
        ("create a task: pay rent", "Pay rent"),
        ("remind me to call mom", "Call mom"),
        ("New task: water the plants.", "Water the plants"),
        ("add walk the dog to my list", "Walk the dog"),
    ],
)
async def test_add(agent: Agent[TurnContext], sessions: Sessions, message: str, title: str) -> None:
    turn = await say(agent, sessions, message)
    [(task_id, stored)] = (await tasks_of(sessions)).items()
    assert stored == (title, False)
    assert turn.tools == ["add_task"]
    assert turn.reply == f"Added '{title}' (task {task_id})."


async def test_add_with_description(agent: Agent[TurnContext], sessions: Sessions) -> None:
    await say(agent, sessions, "add buy milk with description 2 litres, semi-skimmed")
    async with sessions.begin() as session:
        [task], _ = await service.page(session, "alice")
    assert (task.title, task.description) == ("Buy milk", "2 litres, semi-skimmed")


async def test_add_without_a_title_asks(agent: Agent[TurnContext], sessions: Sessions) -> None:
    turn = await say(agent, sessions, "add a task")
    assert turn.tools == [] and "What should the task say?" in turn.reply
    assert await tasks_of(sessions) == {}


@pytest.mark.parametrize(
    ("message", "status", "shown"),
    [
        ("show my tasks", "all", {"Buy milk", "Pay rent"}),
        ("list tasks", "all", {"Buy milk", "Pay rent"}),
        ("What's on my list?", "all", {"Buy milk", "Pay rent"}),
        ("show completed tasks", "completed", {"Pay rent"}),
        ("show pending tasks", "pending", {"Buy milk"}),
        ("what's left", "pending", {"Buy milk"}),
    ],
)
async def test_list(
    agent: Agent[TurnContext], sessions: Sessions, message: str, status: str, shown: set[str]
) -> None:
    milk = await add(sessions, "Buy milk")
    rent = await add(sessions, "Pay rent", done=True)
    await add(sessions, "Not alice's", user="bob")
    turn = await say(agent, sessions, message)
    assert turn.ctx.tool_calls[0]["arguments"] == {"status": status}
    assert turn.tools == ["list_tasks"]
    lines = {
        "Buy milk": f"- #{milk.id} Buy milk — pending",
        "Pay rent": f"- #{rent.id} Pay rent — ✓ done",
    }
    for title, line in lines.items():
        assert (line in turn.reply) == (title in shown)
    assert "Not alice's" not in turn.reply


async def test_list_when_empty(agent: Agent[TurnContext], sessions: Sessions) -> None:
    assert (await say(agent, sessions, "show my tasks")).reply == "You have no tasks."
    assert (await say(agent, sessions, "what's left")).reply == "You have no pending tasks."


@pytest.mark.parametrize(
    "message",
    [
        "mark the milk task as done",
        "complete buy milk",
        "I finished the milk task",
        "tick off the milk task",
        "The milk task is done.",
    ],
)
async def test_complete_by_name_lists_then_completes(
    agent: Agent[TurnContext], sessions: Sessions, message: str
) -> None:
    milk = await add(sessions, "Buy milk")
    mom = await add(sessions, "Call mom")
    turn = await say(agent, sessions, message)
    assert turn.tools == ["list_tasks", "complete_task"]
    assert turn.ctx.tool_calls[1]["arguments"] == {"task_id": milk.id}
    assert await tasks_of(sessions) == {milk.id: ("Buy milk", True), mom.id: ("Call mom", False)}
    assert turn.reply == f"Marked 'Buy milk' (task {milk.id}) as done."


@pytest.mark.parametrize("template", ["mark task {} as done", "complete task #{}"])
async def test_complete_by_id_calls_directly(
    agent: Agent[TurnContext], sessions: Sessions, template: str
) -> None:
    await add(sessions, "Buy milk")
    mom = await add(sessions, "Call mom")
    turn = await say(agent, sessions, template.format(mom.id))
    assert turn.tools == ["complete_task"]
    assert (await tasks_of(sessions))[mom.id] == ("Call mom", True)


async def test_no_match_says_so_and_changes_nothing(
    agent: Agent[TurnContext], sessions: Sessions
) -> None:
    milk = await add(sessions, "Buy milk")
    turn = await say(agent, sessions, "delete the unicorn task")
    assert turn.tools == ["list_tasks"]
    assert turn.reply.startswith("I couldn't find a task matching 'unicorn'.")
    assert f"#{milk.id} Buy milk" in turn.reply
    assert await tasks_of(sessions) == {milk.id: ("Buy milk", False)}


async def test_ambiguous_name_asks_which_one(agent: Agent[TurnContext], sessions: Sessions) -> None:
    milk = await add(sessions, "Buy milk")
    oat = await add(sessions, "Buy oat milk")
    turn = await say(agent, sessions, "mark the milk task as done")
    assert turn.tools == ["list_tasks"]
    assert "which one do you mean?" in turn.reply
    assert f"#{milk.id} Buy milk" in turn.reply and f"#{oat.id} Buy oat milk" in turn.reply
    assert not any(done for _, done in (await tasks_of(sessions)).values())
    # the exact title is not ambiguous
    exact = await say(agent, sessions, "complete buy milk")
    assert exact.ctx.tool_calls[1]["arguments"] == {"task_id": milk.id}
    assert await tasks_of(sessions) == {
        milk.id: ("Buy milk", True),
        oat.id: ("Buy oat milk", False),
    }


async def test_completing_a_done_task_by_name(
    agent: Agent[TurnContext], sessions: Sessions
) -> None:
    milk = await add(sessions, "Buy milk", done=True)
    turn = await say(agent, sessions, "mark the milk task as done")
    assert turn.tools == ["list_tasks"]
    assert turn.reply == f"'Buy milk' (task {milk.id}) is already done."


@pytest.mark.parametrize("verb", ["rename", "change"])
async def test_rename_by_id(agent: Agent[TurnContext], sessions: Sessions, verb: str) -> None:
    task = await add(sessions, "Buy milk")
    turn = await say(agent, sessions, f"{verb} task {task.id} to call mom")
    assert turn.tools == ["update_task"]
    assert turn.ctx.tool_calls[0]["arguments"] == {"task_id": task.id, "title": "Call mom"}
    assert await tasks_of(sessions) == {task.id: ("Call mom", False)}
    assert turn.reply == f"Renamed task {task.id} to 'Call mom'."


async def test_rename_by_name_lists_first(agent: Agent[TurnContext], sessions: Sessions) -> None:
    milk = await add(sessions, "Buy milk")
    mom = await add(sessions, "Call mom")
    turn = await say(agent, sessions, "rename the milk task to buy oat milk")
    assert turn.tools == ["list_tasks", "update_task"]
    assert await tasks_of(sessions) == {
        milk.id: ("Buy oat milk", False),
        mom.id: ("Call mom", False),
    }


async def test_change_description(agent: Agent[TurnContext], sessions: Sessions) -> None:
    task = await add(sessions, "Buy milk")
    turn = await say(agent, sessions, f"change the description of task {task.id} to two litres")
    assert turn.ctx.tool_calls[0]["arguments"] == {"task_id": task.id, "description": "two litres"}
    async with sessions.begin() as session:
        stored = await service.get_task(session, "alice", task.id)
    assert (stored.title, stored.description) == ("Buy milk", "two litres")


@pytest.mark.parametrize("message", ["delete the milk task", "remove buy milk"])
async def test_delete_by_name(agent: Agent[TurnContext], sessions: Sessions, message: str) -> None:
    milk = await add(sessions, "Buy milk")
    mom = await add(sessions, "Call mom")
    turn = await say(agent, sessions, message)
    assert turn.tools == ["list_tasks", "delete_task"]
    assert await tasks_of(sessions) == {mom.id: ("Call mom", False)}
    assert turn.reply == f"Deleted 'Buy milk' (task {milk.id})."


async def test_delete_by_id(agent: Agent[TurnContext], sessions: Sessions) -> None:
    milk = await add(sessions, "Buy milk")
    mom = await add(sessions, "Call mom")
    turn = await say(agent, sessions, f"delete task {milk.id}")
    assert turn.tools == ["delete_task"]
    assert await tasks_of(sessions) == {mom.id: ("Call mom", False)}


async def test_delete_all_is_refused(agent: Agent[TurnContext], sessions: Sessions) -> None:
    milk = await add(sessions, "Buy milk")
    turn = await say(agent, sessions, "delete all tasks")
    assert turn.tools == [] and "one task at a time" in turn.reply
    assert milk.id in await tasks_of(sessions)


async def test_tool_error_is_told_plainly(agent: Agent[TurnContext], sessions: Sessions) -> None:
    turn = await say(agent, sessions, "complete task 999999")
    assert turn.tools == ["complete_task"]
    assert turn.reply == "Sorry, I couldn't complete that task: Task 999999 not found."


async def test_another_users_task_is_not_found(
    agent: Agent[TurnContext], sessions: Sessions
) -> None:
    bobs = await add(sessions, "Bob's secret", user="bob")
    turn = await say(agent, sessions, f"delete task {bobs.id}")
    assert turn.reply == f"Sorry, I couldn't delete that task: Task {bobs.id} not found."
    assert await tasks_of(sessions, "bob") == {bobs.id: ("Bob's secret", False)}


@pytest.mark.parametrize("message", ["hi", "Hello!", "what is the weather", "what can you do?"])
async def test_greeting_and_anything_else_explain_the_offline_model(
    agent: Agent[TurnContext], sessions: Sessions, message: str
) -> None:
    turn = await say(agent, sessions, message)
    assert turn.tools == []
    assert "offline" in turn.reply and "not an AI model" in turn.reply
    for verb in ("add", "list", "complete", "rename", "delete"):
        assert verb in turn.reply


async def test_it_refers_to_the_task_just_added(
    agent: Agent[TurnContext], sessions: Sessions
) -> None:
    first = await say(agent, sessions, "add a task to water plants")
    other = await add(sessions, "Call mom")
    done = await say(agent, sessions, "mark it done", history=first.items)
    [(task_id, _)] = [(t, v) for t, v in (await tasks_of(sessions)).items() if t != other.id]
    assert done.tools == ["complete_task"]
    assert await tasks_of(sessions) == {
        task_id: ("Water plants", True),
        other.id: ("Call mom", False),
    }
    gone = await say(agent, sessions, "delete it", history=done.items)
    assert gone.tools == ["delete_task"]
    assert await tasks_of(sessions) == {other.id: ("Call mom", False)}


async def test_it_after_a_list_of_several_asks(
    agent: Agent[TurnContext], sessions: Sessions
) -> None:
    await add(sessions, "Buy milk")
    await add(sessions, "Call mom")
    listed = await say(agent, sessions, "show my tasks")
    turn = await say(agent, sessions, "delete it", history=listed.items)
    assert turn.tools == [] and "Which task do you mean?" in turn.reply
    assert len(await tasks_of(sessions)) == 2


async def test_history_in_every_item_shape(agent: Agent[TurnContext], sessions: Sessions) -> None:
    milk = await add(sessions, "Buy milk")
    history = [
        {"role": "user", "content": [{"type": "input_text", "text": "hello"}]},
        {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "Hello! I can help."}],
        },
        {"role": "user", "content": "show my tasks"},
        {"type": "function_call", "call_id": "c1", "name": "list_tasks", "arguments": "{}"},
        {
            "type": "function_call_output",
            "call_id": "c1",
            "output": f'{{"tasks": [{{"id": {milk.id}, "title": "Buy milk", "completed": false}}]}}',
        },
        {"role": "assistant", "content": "Your tasks: Buy milk"},
    ]
    turn = await say(agent, sessions, "mark it done", history=history)
    assert turn.tools == ["complete_task"]
    assert await tasks_of(sessions) == {milk.id: ("Buy milk", True)}


async def test_a_repeated_call_ends_the_turn_with_text() -> None:
    # A turn that already deleted task 3 and then listed it again must not delete it again.
    items: list[Any] = [
        {"role": "user", "content": "delete the milk task"},
        {
            "type": "function_call",
            "call_id": "a",
            "name": "delete_task",
            "arguments": '{"task_id": 3}',
        },
        {"type": "function_call_output", "call_id": "a", "output": '{"error": "Task 3 not found"}'},
        {"type": "function_call", "call_id": "b", "name": "list_tasks", "arguments": "{}"},
        {
            "type": "function_call_output",
            "call_id": "b",
            "output": '{"tasks": [{"id": 3, "title": "Buy milk", "completed": false}]}',
        },
    ]
    response = await OfflineModel().get_response(
        None,
        items,
        ModelSettings(),
        list(task_tools()),
        None,
        [],
        ModelTracing.DISABLED,
        previous_response_id=None,
        conversation_id=None,
        prompt=None,
    )
    [message] = response.output
    assert message.type == "message"
    assert "rather than repeat myself" in message.content[0].text  # type: ignore[union-attr]
    assert response.usage.requests == 1 and response.usage.input_tokens > 0


async def test_without_the_tool_it_says_so(sessions: Sessions) -> None:
    agent = Agent[TurnContext](name="No tools", model=OfflineModel(), tools=[])
    turn = await say(agent, sessions, "add a task to buy milk")
    assert turn.reply == "I can't do that here: the add_task tool is not available."
    assert await tasks_of(sessions) == {}


async def test_usage_is_reported(agent: Agent[TurnContext], sessions: Sessions) -> None:
    ctx = context_for(sessions)
    result = await Runner.run(agent, "add a task to buy milk", context=ctx)
    usage = result.context_wrapper.usage
    assert usage.requests == 2
    assert usage.input_tokens > 0 and usage.output_tokens > 0
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens


async def test_streaming_sends_text_deltas(agent: Agent[TurnContext], sessions: Sessions) -> None:
    await add(sessions, "Buy milk")
    ctx = context_for(sessions)
    result = Runner.run_streamed(agent, "mark the milk task as done", context=ctx)
    raw: list[str] = []
    deltas: list[str] = []
    called: list[str] = []
    async for event in result.stream_events():
        if event.type == "raw_response_event":
            raw.append(event.data.type)
            if event.data.type == "response.output_text.delta":
                deltas.append(event.data.delta)
        elif event.type == "run_item_stream_event" and event.name == "tool_called":
            called.append(event.item.raw_item.name)  # type: ignore[union-attr]
    assert called == ["list_tasks", "complete_task"]
    assert [c["tool"] for c in ctx.tool_calls] == ["list_tasks", "complete_task"]
    assert len(deltas) > 3 and "".join(deltas) == result.final_output
    assert result.final_output.startswith("Marked 'Buy milk' (task ")
    # three model responses, with the events the model client sends (chat_model): two function
    # calls (each only its completed response), then the message's start, its deltas, the end
    text = ["response.output_item.added", *["response.output_text.delta"] * len(deltas)]
    assert raw == ["response.completed"] * 2 + text + ["response.completed"]
    assert list((await tasks_of(sessions)).values()) == [("Buy milk", True)]
    assert result.context_wrapper.usage.requests == 3


async def test_chatkit_streams_the_offline_reply(settings: Settings, alice: dict[str, str]) -> None:
    # No LLM key in the settings: the app runs on the offline model, through stream_agent_response.
    events_of = TypeAdapter[Any](ThreadStreamEvent)
    request = ThreadsCreateReq(
        params=ThreadCreateParams(
            input=UserMessageInput(
                content=[UserMessageTextContent(text="add a task to buy milk")],
                attachments=[],
                inference_options=InferenceOptions(),
            )
        )
    )
    async with running_app(create_app(settings)) as client:
        r = await client.post(
            "/api/chatkit",
            content=request.model_dump_json(),
            headers={**alice, "content-type": "application/json"},
        )
        tasks = (await client.get("/api/tasks", headers=alice)).json()["tasks"]
    assert r.status_code == 200, r.text
    events = [
        events_of.validate_json(line[6:])
        for line in r.text.splitlines()
        if line.startswith("data: ")
    ]
    deltas = [
        e.update.delta
        for e in events
        if e.type == "thread.item.updated"
        and e.update.type == "assistant_message.content_part.text_delta"
    ]
    [reply] = [
        e.item
        for e in events
        if e.type == "thread.item.done" and e.item.type == "assistant_message"
    ]
    assert [t["title"] for t in tasks] == ["Buy milk"]
    assert reply.content[0].text == f"Added 'Buy milk' (task {tasks[0]['id']})."
    assert len(deltas) > 1 and "".join(deltas) == reply.content[0].text


def test_one_model_per_process_has_no_state() -> None:
    model = OfflineModel()
    assert model.name == "offline-rules" and vars(model) == {}


async def test_string_input_and_unique_ids() -> None:
    model = OfflineModel()
    calls = [
        await model.get_response(
            "system",
            "add a task to buy milk",
            ModelSettings(),
            list(task_tools()),
            None,
            [],
            ModelTracing.DISABLED,
            previous_response_id=None,
            conversation_id=None,
            prompt=None,
        )
        for _ in range(2)
    ]
    [first], [second] = (c.output for c in calls)
    assert first.type == second.type == "function_call"
    assert first.arguments == '{"title": "Buy milk"}'  # type: ignore[union-attr]
    assert first.call_id != second.call_id  # type: ignore[union-attr]
    assert calls[0].response_id != calls[1].response_id
