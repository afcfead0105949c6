"""The stream events and output items the Agents SDK reads from a model, built once for the model
client (`chat_model`) and the offline model: text deltas, the message's start, the completed
response, and the output items (a message, a function call)."""

from __future__ import annotations

import itertools
import time
from typing import Any, cast

from agents import Usage
from agents.items import TResponseStreamEvent
from openai.types.responses import (
    Response,
    ResponseCompletedEvent,
    ResponseFunctionToolCall,
    ResponseOutputItemAddedEvent,
    ResponseOutputMessage,
    ResponseOutputText,
    ResponseUsage,
)
from openai.types.responses.response_usage import InputTokensDetails, OutputTokensDetails

ids = itertools.count(1)
"""Response, message and call ids for items the provider gave none."""


class TextDelta:
    """A `response.output_text.delta` event, built cheaply: one per streamed chunk, and the
    OpenAI models' `construct` cost more than the rest of the chunk's handling. The Agents SDK
    only forwards these (as raw stream events); it reads the same attributes as the model's."""

    __slots__ = ("delta", "item_id", "sequence_number")
    type = "response.output_text.delta"
    output_index = 0
    content_index = 0
    logprobs: tuple[()] = ()

    def __init__(self, item_id: str, delta: str, sequence_number: int) -> None:
        self.item_id = item_id
        self.delta = delta
        self.sequence_number = sequence_number


def message_item(text: str, item_id: str) -> ResponseOutputMessage:
    """The assistant's text as an output item."""
    return ResponseOutputMessage.model_construct(
        id=item_id,
        type="message",
        role="assistant",
        status="completed",
        content=[
            ResponseOutputText.model_construct(
                type="output_text", text=text, annotations=[], logprobs=[]
            )
        ],
    )


def text_delta(item_id: str, delta: str, sequence_number: int) -> TResponseStreamEvent:
    return cast(Any, TextDelta(item_id, delta, sequence_number))


def call_item(
    call_id: str, name: str, arguments: str, signature: str | None = None
) -> ResponseFunctionToolCall:
    """A function call as an output item (a Gemini thought signature in its provider data)."""
    fields: dict[str, Any] = {
        "id": "__fake_id__",
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "type": "function_call",
    }
    if signature:
        fields["provider_data"] = {"thought_signature": signature}
    return ResponseFunctionToolCall(**fields)


def message_started(item_id: str, sequence_number: int) -> TResponseStreamEvent:
    """`response.output_item.added` for the message about to stream its text deltas."""
    return ResponseOutputItemAddedEvent.model_construct(
        type="response.output_item.added",
        item=message_item("", item_id),
        output_index=0,
        sequence_number=sequence_number,
    )


def completed(
    model: str, output: list[Any], usage: dict[str, Any], sequence_number: int
) -> TResponseStreamEvent:
    """`response.completed`: the whole response; `usage` in Chat Completions' keys."""
    return ResponseCompletedEvent.model_construct(
        type="response.completed",
        response=Response.model_construct(
            id=f"resp_{next(ids)}",
            created_at=time.time(),
            model=model,
            object="response",
            output=output,
            status="completed",
            usage=_response_usage(usage),
            tool_choice="auto",
            tools=[],
            parallel_tool_calls=True,
        ),
        sequence_number=sequence_number,
    )


def usage_of(usage: dict[str, Any]) -> Usage:
    """The SDK's usage for one request, from Chat Completions' usage keys."""
    return Usage(
        requests=1,
        input_tokens=usage.get("prompt_tokens") or 0,
        output_tokens=usage.get("completion_tokens") or 0,
        total_tokens=usage.get("total_tokens") or 0,
    )


def _response_usage(usage: dict[str, Any]) -> ResponseUsage:
    prompt = usage.get("prompt_tokens") or 0
    completion = usage.get("completion_tokens") or 0
    return ResponseUsage.model_construct(
        input_tokens=prompt,
        input_tokens_details=InputTokensDetails.model_construct(cached_tokens=0),
        output_tokens=completion,
        output_tokens_details=OutputTokensDetails.model_construct(reasoning_tokens=0),
        total_tokens=usage.get("total_tokens") or prompt + completion,
    )
