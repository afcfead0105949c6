"""The built-in offline model: what the agent runs on when no LLM key is configured.

It lets anyone chat with the service without an account anywhere. It implements the Agents SDK
`Model` interface, so the same `Runner`, tools and ChatKit streaming path run as with a real
model. It is stateless: `plan` derives each step from the input items alone (the request is read
by `offline_intents`), makes at most one tool call per response, and never repeats a call within
a turn. It is a handful of rules, not an LLM, and its help text says so.

`stream_response` emits the Responses events a real provider sends; each response holds one
output item (a message or a function call):

    response.created, response.in_progress, response.output_item.added,
      message: response.content_part.added, response.output_text.delta (one per word),
               response.output_text.done, response.content_part.done
      call:    response.function_call_arguments.delta, response.function_call_arguments.done
    response.output_item.done, response.completed (the full response, usage included)
"""

from __future__ import annotations

import itertools
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from agents import Model, ModelResponse, ModelSettings, ModelTracing, Tool, Usage
from agents.agent_output import AgentOutputSchemaBase
from agents.handoffs import Handoff
from agents.items import TResponseInputItem, TResponseOutputItem, TResponseStreamEvent
from openai.types.responses import (
    Response,
    ResponseCompletedEvent,
    ResponseContentPartAddedEvent,
    ResponseContentPartDoneEvent,
    ResponseCreatedEvent,
    ResponseFunctionCallArgumentsDeltaEvent,
    ResponseFunctionCallArgumentsDoneEvent,
    ResponseFunctionToolCall,
    ResponseInProgressEvent,
    ResponseOutputItemAddedEvent,
    ResponseOutputItemDoneEvent,
    ResponseOutputMessage,
    ResponseOutputText,
    ResponseTextDeltaEvent,
    ResponseTextDoneEvent,
    ResponseUsage,
)
from openai.types.responses.response_prompt_param import ResponsePromptParam
from openai.types.responses.response_usage import InputTokensDetails, OutputTokensDetails

from backend.agent.items import text_of
from backend.agent.offline_intents import Intent, ToolCall, match_tasks, parse, read, words
from backend.core.config import OFFLINE_MODEL_NAME

HELP = (
    "I'm the built-in offline assistant: a few simple rules, not an AI model, so keep requests "
    'plain. I can add, list, complete, rename and delete your tasks. Try "add a task to buy '
    'milk", "show my tasks", "mark the milk task as done", "rename task 3 to call mom" or '
    '"delete task 3".'
)
MAX_CALLS_PER_TURN = 4
"""More calls than any request needs (two at most): a turn past this is going in circles."""


@dataclass(frozen=True)
class Step:
    """The next thing to do: call one tool, or answer with text."""

    call: tuple[str, dict[str, Any]] | None = None
    text: str = ""


# --- deciding --------------------------------------------------------------------------------


def plan(items: Sequence[Mapping[str, Any]], available: Collection[str] | None = None) -> Step:
    """The next step for this conversation; `available` names the tools the agent offers."""
    convo = read(items)
    intent = parse(convo.message)
    done = [call for call in convo.calls if call.result is not None]
    step = _after(intent, done[-1]) if done else _first(intent, convo.earlier_ids)
    if step.call is None:
        return step
    name, arguments = step.call
    if available is not None and name not in available:
        return Step(text=f"I can't do that here: the {name} tool is not available.")
    repeated = any(c.name == name and c.arguments == arguments for c in convo.calls)
    if repeated or len(convo.calls) >= MAX_CALLS_PER_TURN:
        last = f" {_report(done[-1])}" if done else ""
        return Step(text=f"I stopped here rather than repeat myself.{last}")
    return step


def _first(intent: Intent, earlier_ids: list[int]) -> Step:
    if intent.action == "add":
        if not intent.text:
            return Step(text="What should the task say? For example: add a task to buy milk.")
        arguments: dict[str, Any] = {"title": intent.text}
        if intent.description:
            arguments["description"] = intent.description
        return Step(call=("add_task", arguments))
    if intent.action == "list":
        return Step(call=("list_tasks", {"status": intent.status}))
    if intent.action in ("complete", "rename", "delete"):
        return _on_target(intent, earlier_ids)
    if intent.action == "reopen":
        return Step(text="I can't mark a task as not done. " + HELP)
    if intent.action == "greet":
        return Step(text="Hello! " + HELP)
    if intent.action == "thanks":
        return Step(text="You're welcome!")
    return Step(text=HELP)


def _on_target(intent: Intent, earlier_ids: list[int]) -> Step:
    target = intent.target
    if intent.action == "rename" and not intent.text:
        return Step(text="What should the new title be? For example: rename task 3 to call mom.")
    if target.impossible_id:
        return Step(
            text='I couldn\'t find that task: no task has that number. Say "show my tasks" to see them.'
        )
    if target.task_id is not None:
        return Step(call=_action(intent, target.task_id))
    if target.pronoun and len(earlier_ids) == 1:
        return Step(call=_action(intent, earlier_ids[0]))
    if re.match(r"^(?:all|every|everything|them all)\b", target.phrase):
        return Step(text=f"I can only {intent.action} one task at a time. Which one?")
    if target.pronoun or not words(target.phrase):
        return Step(text='Which task do you mean? Tell me its number, or say "show my tasks".')
    return Step(call=("list_tasks", {"status": "all"}))  # find the id of the named task


def _action(intent: Intent, task_id: int) -> tuple[str, dict[str, Any]]:
    if intent.action == "rename":
        return "update_task", {"task_id": task_id, intent.field: intent.text}
    return f"{intent.action}_task", {"task_id": task_id}


def _after(intent: Intent, last: ToolCall) -> Step:
    """A tool result came back: look up the named task, or report."""
    result = last.result or {}
    if "error" in result:
        error = str(result["error"]).rstrip(".")
        return Step(text=f"Sorry, I couldn't {_FAILED.get(last.name, 'do that')}: {error}.")
    naming = intent.action in ("complete", "rename", "delete") and intent.target.phrase
    if last.name == "list_tasks" and naming and intent.target.task_id is None:
        tasks = result.get("tasks")
        listed = [t for t in tasks if isinstance(t, dict)] if isinstance(tasks, list) else []
        count = result.get("count")
        searched = "search" in last.arguments
        cut_short = isinstance(count, int) and count > len(listed)
        if cut_short and not searched and not match_tasks(listed, intent.target.phrase):
            # Look again among the titles that hold the phrase's longest word.
            search = max(words(intent.target.phrase), key=len)
            return Step(call=("list_tasks", {"status": "all", "search": search}))
        return _on_match(intent, listed, count if isinstance(count, int) else None, searched)
    return Step(text=_report(last))


def _on_match(
    intent: Intent, tasks: list[dict[str, Any]], count: int | None = None, searched: bool = False
) -> Step:
    phrase = intent.target.phrase
    matches = [t for t in match_tasks(tasks, phrase) if isinstance(t.get("id"), int)]
    if intent.action == "complete":
        open_ = [t for t in matches if not t.get("completed")]
        if matches and not open_:
            if len(matches) == 1:
                return Step(
                    text=f"'{matches[0]['title']}' (task {matches[0]['id']}) is already done."
                )
            return Step(text=f"Every task matching '{phrase}' is already done.")
        matches = open_
    if not matches:
        found = f"\n{format_tasks(tasks, 'all', count)}" if tasks else " You have no tasks."
        if searched:
            found = ""  # the user has other tasks, too many to list here
        return Step(text=f"I couldn't find a task matching '{phrase}'.{found}")
    if len(matches) > 1:
        options = "\n".join(f"- #{t['id']} {t['title']}" for t in matches)
        example = f"{intent.action} task {matches[0]['id']}"
        return Step(
            text=f"Several tasks match '{phrase}'; which one do you mean?\n{options}\n"
            f'Tell me its number, e.g. "{example}".'
        )
    return Step(call=_action(intent, matches[0]["id"]))


_FAILED = {
    "add_task": "add that task",
    "list_tasks": "list your tasks",
    "complete_task": "complete that task",
    "update_task": "update that task",
    "delete_task": "delete that task",
}


def _report(call: ToolCall) -> str:
    """The reply after a successful tool call."""
    result = call.result or {}
    title, task_id = result.get("title", ""), result.get("task_id", "?")
    if call.name == "add_task":
        return f"Added '{title}' (task {task_id})."
    if call.name == "complete_task":
        return f"Marked '{title}' (task {task_id}) as done."
    if call.name == "update_task" and "title" not in call.arguments:
        return f"Updated the description of '{title}' (task {task_id})."
    if call.name == "update_task":
        return f"Renamed task {task_id} to '{title}'."
    if call.name == "delete_task":
        return f"Deleted '{title}' (task {task_id})."
    if call.name == "list_tasks":
        tasks = result.get("tasks")
        listed = [t for t in tasks if isinstance(t, dict)] if isinstance(tasks, list) else []
        count = result.get("count")
        return format_tasks(
            listed,
            str(call.arguments.get("status", "all")),
            count if isinstance(count, int) else None,
        )
    return "Done."


def format_tasks(tasks: list[dict[str, Any]], status: str, count: int | None = None) -> str:
    """The task list as text; `count` (all that match) when the list is only the first ones."""
    if not tasks:
        return {
            "completed": "You have no completed tasks.",
            "pending": "You have no pending tasks.",
        }.get(status, "You have no tasks.")
    heading = {"completed": "Your completed tasks", "pending": "Your pending tasks"}
    lines = [
        f"- #{t.get('id')} {t.get('title')} — {'✓ done' if t.get('completed') else 'pending'}"
        for t in tasks
    ]
    shown = f"{len(tasks)}"
    more = ""
    if count is not None and count > len(tasks):
        shown = f"the first {len(tasks)} of {count}"
        more = (
            '\nTo find one, name it ("mark the milk task as done") or use its number, '
            'or say "show my pending tasks".'
        )
    return f"{heading.get(status, 'Your tasks')} ({shown}):\n" + "\n".join(lines) + more


# --- speaking the Responses protocol ---------------------------------------------------------


class OfflineModel(Model):
    """Rule-based stand-in for an LLM. It holds no state: one instance serves every run."""

    name = OFFLINE_MODEL_NAME

    async def get_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: ModelSettings,
        tools: list[Tool],
        output_schema: AgentOutputSchemaBase | None,
        handoffs: list[Handoff],
        tracing: ModelTracing,
        *,
        previous_response_id: str | None,
        conversation_id: str | None,
        prompt: ResponsePromptParam | None,
    ) -> ModelResponse:
        response = build_response(system_instructions, input, tools)
        usage = cast(ResponseUsage, response.usage)
        return ModelResponse(
            output=list(response.output),
            usage=Usage(
                requests=1,
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                total_tokens=usage.total_tokens,
            ),
            response_id=response.id,
        )

    async def stream_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: ModelSettings,
        tools: list[Tool],
        output_schema: AgentOutputSchemaBase | None,
        handoffs: list[Handoff],
        tracing: ModelTracing,
        *,
        previous_response_id: str | None,
        conversation_id: str | None,
        prompt: ResponsePromptParam | None,
    ) -> AsyncIterator[TResponseStreamEvent]:
        for event in stream_events(build_response(system_instructions, input, tools)):
            yield event


def _as_items(input: str | list[TResponseInputItem]) -> list[Mapping[str, Any]]:
    if isinstance(input, str):
        return [{"role": "user", "content": input}]
    items: list[Mapping[str, Any]] = []
    for item in cast(list[Any], input):
        if isinstance(item, Mapping):
            items.append(item)
        elif hasattr(item, "model_dump"):
            items.append(item.model_dump(exclude_unset=True))
    return items


def _count(text: str) -> int:
    """A rough token count (words and punctuation), so usage logs show plausible numbers."""
    return len(re.findall(r"\w+|[^\w\s]", text))


def build_response(
    system_instructions: str | None, input: str | list[TResponseInputItem], tools: list[Tool]
) -> Response:
    """The whole response for one model call: one output item, and word-count usage."""
    items = _as_items(input)
    step = plan(items, available={str(getattr(tool, "name", "")) for tool in tools})
    output: TResponseOutputItem
    if step.call is not None:
        name, arguments = step.call
        output = ResponseFunctionToolCall(
            id=f"fc_{uuid.uuid4().hex}",
            call_id=f"call_{uuid.uuid4().hex}",
            type="function_call",
            name=name,
            arguments=json.dumps(arguments, ensure_ascii=False),
            status="completed",
        )
        output_tokens = _count(name + output.arguments)
    else:
        output = ResponseOutputMessage(
            id=f"msg_{uuid.uuid4().hex}",
            type="message",
            role="assistant",
            status="completed",
            content=[
                ResponseOutputText(type="output_text", text=step.text, annotations=[], logprobs=[])
            ],
        )
        output_tokens = _count(step.text)
    seen = " ".join(
        [system_instructions or ""]
        + [
            text_of(i.get("content")) + str(i.get("arguments", "")) + str(i.get("output", ""))
            for i in items
        ]
    )
    input_tokens = _count(seen)
    return Response(
        id=f"resp_{uuid.uuid4().hex}",
        created_at=time.time(),
        model=OFFLINE_MODEL_NAME,
        object="response",
        output=[output],
        tool_choice="auto",
        tools=[],
        parallel_tool_calls=False,
        status="completed",
        usage=ResponseUsage(
            input_tokens=input_tokens,
            input_tokens_details=InputTokensDetails(cached_tokens=0, cache_write_tokens=0),
            output_tokens=output_tokens,
            output_tokens_details=OutputTokensDetails(reasoning_tokens=0),
            total_tokens=input_tokens + output_tokens,
        ),
    )


def stream_events(response: Response) -> Iterator[TResponseStreamEvent]:
    """The events a Responses stream carries for `response` (see the module docstring)."""
    seq = itertools.count()
    started = response.model_copy(update={"output": [], "status": "in_progress", "usage": None})
    yield ResponseCreatedEvent(type="response.created", response=started, sequence_number=next(seq))
    yield ResponseInProgressEvent(
        type="response.in_progress", response=started, sequence_number=next(seq)
    )
    for index, item in enumerate(response.output):
        if isinstance(item, ResponseOutputMessage):
            yield from _message_events(item, index, seq)
        elif isinstance(item, ResponseFunctionToolCall):
            yield from _call_events(item, index, seq)
        yield ResponseOutputItemDoneEvent(
            type="response.output_item.done",
            item=item,
            output_index=index,
            sequence_number=next(seq),
        )
    yield ResponseCompletedEvent(
        type="response.completed", response=response, sequence_number=next(seq)
    )


def _message_events(
    item: ResponseOutputMessage, index: int, seq: Iterator[int]
) -> Iterator[TResponseStreamEvent]:
    yield ResponseOutputItemAddedEvent(
        type="response.output_item.added",
        item=item.model_copy(update={"content": [], "status": "in_progress"}),
        output_index=index,
        sequence_number=next(seq),
    )
    for part_index, part in enumerate(item.content):
        if not isinstance(part, ResponseOutputText):
            continue
        yield ResponseContentPartAddedEvent(
            type="response.content_part.added",
            item_id=item.id,
            output_index=index,
            content_index=part_index,
            part=part.model_copy(update={"text": ""}),
            sequence_number=next(seq),
        )
        for chunk in re.findall(r"\S+\s*|\s+", part.text):
            yield ResponseTextDeltaEvent(
                type="response.output_text.delta",
                item_id=item.id,
                output_index=index,
                content_index=part_index,
                delta=chunk,
                logprobs=[],
                sequence_number=next(seq),
            )
        yield ResponseTextDoneEvent(
            type="response.output_text.done",
            item_id=item.id,
            output_index=index,
            content_index=part_index,
            text=part.text,
            logprobs=[],
            sequence_number=next(seq),
        )
        yield ResponseContentPartDoneEvent(
            type="response.content_part.done",
            item_id=item.id,
            output_index=index,
            content_index=part_index,
            part=part,
            sequence_number=next(seq),
        )


def _call_events(
    item: ResponseFunctionToolCall, index: int, seq: Iterator[int]
) -> Iterator[TResponseStreamEvent]:
    yield ResponseOutputItemAddedEvent(
        type="response.output_item.added",
        item=item.model_copy(update={"arguments": "", "status": "in_progress"}),
        output_index=index,
        sequence_number=next(seq),
    )
    item_id = item.id or item.call_id
    yield ResponseFunctionCallArgumentsDeltaEvent(
        type="response.function_call_arguments.delta",
        item_id=item_id,
        output_index=index,
        delta=item.arguments,
        sequence_number=next(seq),
    )
    yield ResponseFunctionCallArgumentsDoneEvent(
        type="response.function_call_arguments.done",
        item_id=item_id,
        output_index=index,
        arguments=item.arguments,
        sequence_number=next(seq),
    )
