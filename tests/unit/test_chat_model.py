"""backend.agent.chat_model, the parts that need no provider: SDK input items as Chat Completions
messages, the request body, the answer as SDK output items, and usage."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from agents import ModelSettings
from openai.types.responses import ResponseFunctionToolCall, ResponseOutputMessage

from backend.agent.chat_model import ChatCompletionsModel, _error_status, to_messages
from backend.agent.events import usage_of


def call(
    call_id: str, name: str = "add_task", arguments: str | None = '{"title":"Milk"}', **extra: Any
) -> dict[str, Any]:
    item: dict[str, Any] = {"type": "function_call", "call_id": call_id, "name": name, **extra}
    if arguments is not None:
        item["arguments"] = arguments
    return item


def output(call_id: str, value: Any) -> dict[str, Any]:
    return {"type": "function_call_output", "call_id": call_id, "output": value}


# --- to_messages --------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["user", "system", "developer", "assistant"])
def test_text_messages_keep_their_role_and_text(role: str) -> None:
    assert to_messages([{"role": role, "content": "Hi"}], gemini=False) == [
        {"role": role, "content": "Hi"}
    ]


def test_content_parts_are_joined_into_one_string() -> None:
    item = {
        "role": "user",
        "content": [{"type": "input_text", "text": "Add "}, {"type": "input_text", "text": "milk"}],
    }
    assert to_messages([item], gemini=False) == [{"role": "user", "content": "Add milk"}]


def test_a_call_without_text_before_it_is_an_assistant_message_with_no_content() -> None:
    messages = to_messages([{"role": "user", "content": "Add milk"}, call("c1")], gemini=False)
    assert messages[1] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "c1",
                "type": "function",
                "function": {"name": "add_task", "arguments": '{"title":"Milk"}'},
            }
        ],
    }


def test_parallel_calls_share_one_assistant_message() -> None:
    messages = to_messages([call("c1"), call("c2", "delete_task", '{"task_id":3}')], gemini=False)
    assert len(messages) == 1
    assert [c["id"] for c in messages[0]["tool_calls"]] == ["c1", "c2"]
    assert messages[0]["tool_calls"][1]["function"]["name"] == "delete_task"


def test_a_call_after_assistant_text_joins_that_message() -> None:
    messages = to_messages(
        [{"role": "assistant", "content": "Let me add it."}, call("c1")], gemini=False
    )
    assert len(messages) == 1
    assert messages[0]["content"] == "Let me add it."
    assert messages[0]["tool_calls"][0]["id"] == "c1"


def test_calls_after_a_tool_output_start_a_new_assistant_message() -> None:
    messages = to_messages([call("c1"), output("c1", "ok"), call("c2")], gemini=False)
    assert [m["role"] for m in messages] == ["assistant", "tool", "assistant"]
    assert messages[2]["tool_calls"][0]["id"] == "c2"


@pytest.mark.parametrize("arguments", [None, ""])
def test_a_call_without_arguments_sends_an_empty_object(arguments: str | None) -> None:
    messages = to_messages([call("c1", "list_tasks", arguments)], gemini=False)
    assert messages[0]["tool_calls"][0]["function"]["arguments"] == "{}"


@pytest.mark.parametrize(("gemini", "sent"), [(True, True), (False, False)])
def test_thought_signatures_go_back_to_gemini_only(gemini: bool, sent: bool) -> None:
    item = call("c1", provider_data={"thought_signature": "sig-abc"})
    tool_call = to_messages([item], gemini=gemini)[0]["tool_calls"][0]
    if sent:
        assert tool_call["extra_content"] == {"google": {"thought_signature": "sig-abc"}}
    else:
        assert "extra_content" not in tool_call


def test_a_gemini_call_without_a_signature_sends_none() -> None:
    tool_call = to_messages([call("c1", provider_data=None)], gemini=True)[0]["tool_calls"][0]
    assert "extra_content" not in tool_call


@pytest.mark.parametrize(
    ("value", "content"),
    [
        ('{"task_id":1}', '{"task_id":1}'),
        ({"task_id": 1, "status": "created"}, '{"task_id":1,"status":"created"}'),
        ([1, 2], "[1,2]"),
    ],
)
def test_tool_outputs_are_sent_as_text(value: Any, content: str) -> None:
    assert to_messages([output("c9", value)], gemini=False) == [
        {"role": "tool", "tool_call_id": "c9", "content": content}
    ]


def test_items_chat_completions_cannot_express_are_dropped() -> None:
    items = [{"type": "reasoning", "summary": []}, {"role": "tool", "content": "x"}, {}]
    assert to_messages(items, gemini=False) == []


# --- the model object, without a provider -------------------------------------------------------


def model(
    name: str = "gpt-4o-mini", base_url: str = "https://llm.test/v1/"
) -> ChatCompletionsModel:
    return ChatCompletionsModel(name, base_url=base_url, api_key="k-123", http=None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "gemini"), [("gemini-2.5-flash", True), ("models/Gemini-Pro", True), ("gpt-4o", False)]
)
def test_gemini_is_recognised_by_the_model_name(name: str, gemini: bool) -> None:
    assert model(name).gemini is gemini


def test_the_endpoint_and_auth_header() -> None:
    m = model(base_url="https://llm.test/v1/")
    assert m.url == "https://llm.test/v1/chat/completions"
    assert m.headers["Authorization"] == "Bearer k-123"


def test_the_request_body_puts_the_system_prompt_first() -> None:
    body = orjson.loads(
        model()._body("Be brief.", "Add milk", ModelSettings(temperature=0.2), [], stream=False)
    )
    assert body["model"] == "gpt-4o-mini"
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Add milk"},
    ]
    assert body["temperature"] == 0.2
    assert "stream" not in body
    assert "tools" not in body


def test_a_streamed_request_asks_for_usage_in_the_last_chunk() -> None:
    body = orjson.loads(model()._body(None, "Hi", ModelSettings(), [], stream=True))
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["messages"] == [{"role": "user", "content": "Hi"}]


def test_unset_model_settings_are_not_sent() -> None:
    body = orjson.loads(model()._body(None, "Hi", ModelSettings(), [], stream=False))
    for name in ("temperature", "top_p", "max_tokens", "tool_choice", "parallel_tool_calls"):
        assert name not in body


def test_the_answer_becomes_a_message_then_the_calls() -> None:
    out = model()._output(
        "Adding it.",
        [{"id": "c1", "function": {"name": "add_task", "arguments": '{"title":"Milk"}'}}],
        "msg_1",
    )
    assert isinstance(out[0], ResponseOutputMessage)
    assert out[0].content[0].text == "Adding it."  # type: ignore[union-attr]
    assert isinstance(out[1], ResponseFunctionToolCall)
    assert (out[1].call_id, out[1].name, out[1].arguments) == ("c1", "add_task", '{"title":"Milk"}')


def test_an_answer_without_text_has_no_message_and_calls_get_defaults() -> None:
    out = model()._output("", [{"function": {"name": "list_tasks"}}], "msg_2")
    assert len(out) == 1
    assert out[0].arguments == "{}"
    assert out[0].call_id.startswith("call_")


def test_a_gemini_call_keeps_its_signature_and_loses_the_thought_suffix() -> None:
    call_ = {
        "id": "abc__thought__xyz",
        "function": {"name": "add_task", "arguments": "{}"},
        "extra_content": {"google": {"thought_signature": "sig"}},
    }
    (tool_call,) = model("gemini-2.5-flash")._output("", [call_], "m")
    assert tool_call.call_id == "abc"
    assert tool_call.provider_data == {"thought_signature": "sig"}
    # ... and the signature goes back to Gemini on the next request.
    replayed = to_messages([tool_call.model_dump(exclude_unset=True)], gemini=True)
    assert replayed[0]["tool_calls"][0]["extra_content"]["google"]["thought_signature"] == "sig"


# --- usage and errors ---------------------------------------------------------------------------


def test_usage_is_read_from_the_answer() -> None:
    usage = usage_of({"prompt_tokens": 120, "completion_tokens": 30, "total_tokens": 150})
    assert (usage.requests, usage.input_tokens, usage.output_tokens, usage.total_tokens) == (
        1,
        120,
        30,
        150,
    )


@pytest.mark.parametrize("given", [{}, {"prompt_tokens": None, "completion_tokens": None}])
def test_missing_usage_counts_as_zero(given: dict[str, Any]) -> None:
    usage = usage_of(given)
    assert (usage.requests, usage.input_tokens, usage.output_tokens, usage.total_tokens) == (
        1,
        0,
        0,
        0,
    )


@pytest.mark.parametrize(
    ("error", "status"),
    [
        ({"code": 429}, 429),
        ({"code": 503}, 503),
        ({"code": "RESOURCE_EXHAUSTED"}, 502),
        ({"code": 200}, 502),
        ("boom", 502),
    ],
)
def test_an_error_inside_the_stream_maps_to_an_http_status(error: Any, status: int) -> None:
    assert _error_status(error) == status
