"""The stub model server speaks Chat Completions as the real `openai` client and the Agents SDK parse it."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest
from agents import Agent, ModelSettings, OpenAIChatCompletionsModel, Runner, function_tool

from tests.support.stub_llm import StubLLM

USER = [{"role": "user", "content": "hello"}]


@pytest.fixture
async def stub() -> AsyncIterator[StubLLM]:
    async with StubLLM() as stub:
        yield stub


@pytest.fixture
async def client(stub: StubLLM) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url=stub.base_url, api_key="sk-test", max_retries=0, timeout=5
    ) as client:
        yield client


async def stream_all(
    client: openai.AsyncOpenAI, **kwargs: Any
) -> tuple[str, dict[int, dict[str, Any]], str | None, Any]:
    """Assemble a streamed completion the way a client does: text, tool calls by index, usage."""
    text, calls, finish, usage = "", {}, None, None
    stream = await client.chat.completions.create(model="m", stream=True, **kwargs)
    async for chunk in stream:
        assert chunk.object == "chat.completion.chunk"
        usage = chunk.usage or usage
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            text += choice.delta.content or ""
            for delta in choice.delta.tool_calls or []:
                call = calls.setdefault(delta.index, {"id": None, "name": "", "arguments": ""})
                call["id"] = delta.id or call["id"]
                call["name"] += (delta.function and delta.function.name) or ""
                call["arguments"] += (delta.function and delta.function.arguments) or ""
                call.update(delta.model_extra or {})
    return text, calls, finish, usage


async def test_text_reply_and_the_request_is_recorded(
    stub: StubLLM, client: openai.AsyncOpenAI
) -> None:
    stub.script({"text": "Hi there."})
    completion = await client.chat.completions.create(
        model="my-model", messages=USER, temperature=0.2
    )
    assert completion.model == "my-model"
    assert completion.choices[0].message.content == "Hi there."
    assert completion.choices[0].message.tool_calls is None
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.total_tokens > 0
    assert stub.requests == [{"model": "my-model", "messages": USER, "temperature": 0.2}]
    assert stub.request_headers[0]["authorization"] == "Bearer sk-test"


async def test_tool_calls_with_ids_and_provider_extras(
    stub: StubLLM, client: openai.AsyncOpenAI
) -> None:
    signature = {"google": {"thought_signature": "c2lnbmF0dXJl"}}
    stub.script(
        {
            "tool_calls": [
                {"name": "add_task", "arguments": {"title": "Buy milk"}, "id": "call_1"},
                {"name": "list_tasks", "arguments": {}, "extra_content": signature},
            ]
        }
    )
    completion = await client.chat.completions.create(model="m", messages=USER)
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    first, second = choice.message.tool_calls or []
    assert (first.id, first.function.name) == ("call_1", "add_task")  # type: ignore[union-attr]
    assert json.loads(first.function.arguments) == {"title": "Buy milk"}  # type: ignore[union-attr]
    assert second.id and second.id != first.id
    assert second.model_extra == {"extra_content": signature}


async def test_streamed_text_with_and_without_usage(
    stub: StubLLM, client: openai.AsyncOpenAI
) -> None:
    reply = "A reply long enough to arrive in several chunks."
    stub.script(reply, reply)
    text, calls, finish, usage = await stream_all(
        client, messages=USER, stream_options={"include_usage": True}
    )
    assert (text, calls, finish) == (reply, {}, "stop")
    assert usage is not None and usage.total_tokens > 0
    assert (await stream_all(client, messages=USER))[3] is None


async def test_streamed_tool_calls_assemble(stub: StubLLM, client: openai.AsyncOpenAI) -> None:
    signature = {"google": {"thought_signature": "c2ln"}}
    title = "A title long enough that its arguments are split over several deltas"
    stub.script(
        {
            "tool_calls": [
                {"name": "add_task", "arguments": {"title": title}, "id": "call_a"},
                {"name": "list_tasks", "arguments": {}, "id": "call_b", "extra_content": signature},
            ]
        }
    )
    text, calls, finish, _ = await stream_all(client, messages=USER)
    assert (text, finish) == ("", "tool_calls")
    assert (calls[0]["id"], calls[0]["name"]) == ("call_a", "add_task")
    assert json.loads(calls[0]["arguments"]) == {"title": title}
    assert "extra_content" not in calls[0]
    assert calls[1]["id"] == "call_b" and calls[1]["name"] == "list_tasks"
    assert json.loads(calls[1]["arguments"]) == {}
    assert calls[1]["extra_content"] == signature


async def test_default_model_calls_add_task_then_answers(
    stub: StubLLM, client: openai.AsyncOpenAI
) -> None:
    long = "x" * 300
    completion = await client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": [{"type": "text", "text": long}]}]
    )
    (call,) = completion.choices[0].message.tool_calls or []
    assert call.function.name == "add_task"  # type: ignore[union-attr]
    assert json.loads(call.function.arguments) == {"title": "x" * 200}  # type: ignore[union-attr]
    after_tool = [
        {"role": "user", "content": "buy milk"},
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": '{"status": "created"}'},
    ]
    completion = await client.chat.completions.create(model="m", messages=after_tool)  # type: ignore[arg-type]
    assert completion.choices[0].message.content == "Done: added it."
    assert stub.pending == 0


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ({"status": 500}, openai.InternalServerError),
        ({"status": 502}, openai.InternalServerError),
        ({"status": 401, "body": {"error": {"message": "bad key"}}}, openai.AuthenticationError),
        ({"status": 400}, openai.BadRequestError),
        ({"status": 429, "headers": {"Retry-After": "7"}}, openai.RateLimitError),
        ({"drop": True}, openai.APIConnectionError),
    ],
)
async def test_faults_raise_the_client_errors(
    stub: StubLLM, client: openai.AsyncOpenAI, fault: dict[str, Any], error: type[Exception]
) -> None:
    stub.script(fault, fault, "recovered")
    for stream in (False, True):
        with pytest.raises(error) as raised:
            await client.chat.completions.create(model="m", messages=USER, stream=stream)
        if isinstance(raised.value, openai.APIStatusError):
            assert raised.value.status_code == fault["status"]
            expected_retry_after = fault.get("headers", {}).get("Retry-After")
            assert raised.value.response.headers.get("retry-after") == expected_retry_after
            if "body" in fault:
                assert "bad key" in raised.value.message
    # the client's connection pool survives the fault: the next request is answered normally
    completion = await client.chat.completions.create(model="m", messages=USER)
    assert completion.choices[0].message.content == "recovered"


async def test_hang_outlives_the_client_timeout_and_stop_does_not_wait(
    client: openai.AsyncOpenAI,
) -> None:
    started = time.monotonic()
    async with StubLLM() as stub:
        stub.script({"hang": 30})
        async with openai.AsyncOpenAI(
            base_url=stub.base_url, api_key="k", max_retries=0, timeout=0.3
        ) as impatient:
            with pytest.raises(openai.APITimeoutError):
                await impatient.chat.completions.create(model="m", messages=USER)
            completion = await impatient.chat.completions.create(model="m", messages=USER)
            assert completion.choices[0].finish_reason == "tool_calls"
    assert time.monotonic() - started < 10


async def test_latency_is_applied_and_changeable_at_runtime(stub: StubLLM) -> None:
    body = {"model": "m", "messages": USER}
    async with httpx.AsyncClient(base_url=stub.base_url) as http:
        r = await http.put("/_control", json={"latency_ms": 300})
        assert r.json() == {"latency_ms": 300}
        started = time.monotonic()
        await asyncio.gather(*(http.post("/chat/completions", json=body) for _ in range(10)))
        assert time.monotonic() - started >= 0.3
        stub.latency_ms = 0
        # also served without the /v1 prefix, and other paths are 404
        root = stub.base_url.removesuffix("/v1")
        r = await http.post(f"{root}/chat/completions", json=body)
        assert r.status_code == 200 and r.json()["object"] == "chat.completion"
        assert (await http.get(f"{root}/nope")).status_code == 404
        assert (await http.post("/chat/completions", content=b"not json")).status_code == 400


async def test_models_are_listed(client: openai.AsyncOpenAI) -> None:
    assert [m.id async for m in client.models.list()] == ["stub-model"]


@pytest.mark.parametrize("streaming", [False, True])
async def test_agents_sdk_runs_a_tool_calling_turn(
    stub: StubLLM, client: openai.AsyncOpenAI, streaming: bool
) -> None:
    """The stock `OpenAIChatCompletionsModel` parses both shapes, thought signatures included."""
    added: list[str] = []

    @function_tool
    def add_task(title: str) -> str:
        """Add a task.

        Args:
            title: The task's title.
        """
        added.append(title)
        return "created"

    agent = Agent(
        name="t",
        instructions="Be brief.",
        tools=[add_task],
        model=OpenAIChatCompletionsModel("gemini-2.5-flash", client),
        model_settings=ModelSettings(include_usage=True),
    )
    signature = {"google": {"thought_signature": "c2ln"}}
    stub.script(
        {
            "tool_calls": [
                {"name": "add_task", "arguments": {"title": "Buy milk"}, "extra_content": signature}
            ]
        },
        "Added it.",
    )
    if streaming:
        result: Any = Runner.run_streamed(agent, "add buy milk")
        async for _ in result.stream_events():
            pass
    else:
        result = await Runner.run(agent, "add buy milk")
    assert result.final_output == "Added it." and added == ["Buy milk"]
    assert [bool(r.get("stream")) for r in stub.requests] == [streaming, streaming]
    replayed = stub.requests[1]["messages"]
    assert [m["role"] for m in replayed] == ["system", "user", "assistant", "tool"]
    (call,) = replayed[2]["tool_calls"]
    assert call["function"]["name"] == "add_task"
    assert call.get("extra_content") == signature
    assert replayed[3]["content"] == "created"
