"""The agent's task tools: thin adapters from the Agents SDK to `tasks.actions`.

Schemas are written by hand so they stay inside what Gemini accepts (plain types, no `$ref`,
`$schema` or `additionalProperties`), and none of them has a user parameter: the user comes from
the run context. A failed action becomes a message the model can read and recover from.
"""

from __future__ import annotations

import inspect
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from agents import FunctionTool, RunContextWrapper
from agents.tool_context import ToolContext
from openai.types.responses import ResponseFunctionToolCall
from sqlalchemy.ext.asyncio import AsyncSession

from backend.agent.context import TurnContext
from backend.errors import AppError
from backend.observability import metrics
from backend.tasks.actions import ACTIONS, list_hint

log = logging.getLogger(__name__)

MAX_OUTPUT_CHARS = 16_000
"""The default of MAX_TOOL_OUTPUT_CHARS: the largest tool result (as JSON) a turn keeps."""

_TASK_ID = {"type": "integer", "description": "The task's id, as shown by list_tasks."}

TOOL_SPECS: dict[str, dict[str, Any]] = {
    "add_task": {
        "description": "Create a new task for the user. Returns the new task's id and title.",
        "parameters": {
            "type": "object",
            "properties": {
                "title": {"type": "string", "description": "Short title, 1-200 characters."},
                "description": {
                    "type": "string",
                    "description": "Optional details, up to 2000 characters.",
                },
            },
            "required": ["title"],
        },
    },
    "list_tasks": {
        "description": (
            "List the user's tasks with their ids (oldest first, at most 50; `count` says how "
            "many match in all). Use it to find the id of a task named in words."
        ),
        "parameters": {
            "type": "object",
            "properties": {
                "status": {
                    "type": "string",
                    "enum": ["all", "pending", "completed"],
                    "description": "Which tasks to list (default: all).",
                },
                "search": {
                    "type": "string",
                    "description": "Only tasks whose title contains this text (any case).",
                },
            },
        },
    },
    "complete_task": {
        "description": "Mark a task as completed.",
        "parameters": {
            "type": "object",
            "properties": {"task_id": _TASK_ID},
            "required": ["task_id"],
        },
    },
    "update_task": {
        "description": "Change a task's title and/or description.",
        "parameters": {
            "type": "object",
            "properties": {
                "task_id": _TASK_ID,
                "title": {"type": "string", "description": "New title, 1-200 characters."},
                "description": {
                    "type": "string",
                    "description": "New description, up to 2000 characters.",
                },
            },
            "required": ["task_id"],
        },
    },
    "delete_task": {
        "description": "Delete a task permanently.",
        "parameters": {
            "type": "object",
            "properties": {"task_id": _TASK_ID},
            "required": ["task_id"],
        },
    },
}


Record = Callable[[AsyncSession, dict[str, Any]], Awaitable[None]]
"""Journals a call's result inside the transaction that made its change."""
Executor = Callable[[TurnContext, str, dict[str, Any], Record], Awaitable[dict[str, Any]]]


async def in_process(
    ctx: TurnContext, name: str, arguments: dict[str, Any], record: Record
) -> dict[str, Any]:
    """The default transport: the task action and its journal record in one transaction."""
    async with ctx.sessions.begin() as session:
        result = await ACTIONS[name](session, ctx.user_id, **arguments)
        await record(session, result)
    return result


def _call_item(
    call: ResponseFunctionToolCall | None, name: str, arguments: dict[str, Any]
) -> dict[str, Any]:
    """The model's function-call item as it will be replayed (provider extras included)."""
    if call is not None:
        return call.model_dump(exclude_unset=True, exclude_none=True)
    return {
        "type": "function_call",
        "call_id": f"call_{uuid.uuid4().hex}",
        "name": name,
        "arguments": orjson.dumps(arguments).decode(),
    }


def cap_output(result: dict[str, Any], max_chars: int = MAX_OUTPUT_CHARS) -> dict[str, Any]:
    """`result`, cut so that its JSON is at most `max_chars` characters.

    A task list keeps as many whole tasks as fit (with `count` and a hint to narrow the list);
    any other oversized result becomes a truncated copy of its JSON text. What the model reads
    and what is stored with the turn are both this capped result.
    """
    encoded = orjson.dumps(result)
    if len(encoded) <= max_chars:  # bytes >= characters: a cheap, safe first check
        return result
    if len(encoded.decode()) <= max_chars:
        return result
    tasks = result.get("tasks")
    if isinstance(tasks, list):
        count = result.get("count", len(tasks))
        count = count if isinstance(count, int) else len(tasks)
        low, high = 0, len(tasks)  # the most tasks that fit: binary search on the JSON length
        while low < high:
            mid = (low + high + 1) // 2
            trial = _task_page(result, tasks[:mid], count)
            if len(orjson.dumps(trial).decode()) <= max_chars:
                low = mid
            else:
                high = mid - 1
        capped = _task_page(result, tasks[:low], count)
        if len(orjson.dumps(capped).decode()) <= max_chars:
            return capped
    text = encoded.decode()
    return {"truncated": True, "output": text[: max(0, max_chars - 64)]}


def _task_page(result: dict[str, Any], tasks: list[Any], count: int) -> dict[str, Any]:
    page = {**result, "tasks": tasks, "count": count}
    if count > len(tasks):
        page["hint"] = list_hint(len(tasks), count)
    return page


async def run_action(
    ctx: TurnContext,
    name: str,
    arguments: dict[str, Any],
    executor: Executor = in_process,
    call: ResponseFunctionToolCall | None = None,
    max_output_chars: int = MAX_OUTPUT_CHARS,
) -> dict[str, Any]:
    """Run one task action for the context's user; failures come back as `{"error": ...}`.

    The result is capped (`cap_output`) before it is recorded or returned to the model.
    """
    allowed = TOOL_SPECS[name]["parameters"]["properties"]
    kwargs = {k: v for k, v in arguments.items() if k in allowed}
    # Parallel calls finish in any order; the turn lists them in the order the model made them.
    entry: dict[str, Any] = {"tool": name, "arguments": kwargs, "result": {}}
    ctx.tool_calls.append(entry)
    await _notify(ctx, {"type": "tool_call", "tool": name, "arguments": kwargs})

    async def record(session: AsyncSession, result: dict[str, Any]) -> None:
        if ctx.journal is not None:
            result = cap_output(result, max_output_chars)
            item = _call_item(call, name, kwargs)
            output = {
                "type": "function_call_output",
                "call_id": item["call_id"],
                "output": orjson.dumps(result).decode(),
            }
            await ctx.journal(session, {**entry, "result": result}, [item, output])

    try:
        result = await executor(ctx, name, kwargs, record)
    except AppError as exc:
        result = {"error": exc.detail}
    except TypeError:
        result = {
            "error": f"{name} needs: {', '.join(TOOL_SPECS[name]['parameters'].get('required', []))}"
        }
    result = cap_output(result, max_output_chars)
    metrics.tool_call(name, result)
    entry["result"] = result
    await _notify(ctx, {"type": "tool_result", "tool": name, "result": result})
    return result


async def _notify(ctx: TurnContext, event: dict[str, Any]) -> None:
    if ctx.events is not None:
        outcome = ctx.events(event)
        if inspect.isawaitable(outcome):
            await outcome


def _make_tool(name: str, executor: Executor, max_output_chars: int) -> FunctionTool:
    async def invoke(wrapper: RunContextWrapper[TurnContext], raw_arguments: str) -> str:
        try:
            arguments = orjson.loads(raw_arguments or "{}")
        except orjson.JSONDecodeError:
            arguments = None
        if not isinstance(arguments, dict):
            result: dict[str, Any] = {"error": "arguments must be a JSON object"}
            wrapper.context.tool_calls.append({"tool": name, "arguments": {}, "result": result})
        else:
            call = wrapper.tool_call if isinstance(wrapper, ToolContext) else None
            result = await run_action(
                wrapper.context, name, arguments, executor, call, max_output_chars
            )
        return orjson.dumps(result).decode()

    spec = TOOL_SPECS[name]
    return FunctionTool(
        name=name,
        description=spec["description"],
        params_json_schema=spec["parameters"],
        on_invoke_tool=invoke,
        strict_json_schema=False,
    )


def task_tools(
    executor: Executor = in_process, max_output_chars: int = MAX_OUTPUT_CHARS
) -> list[FunctionTool]:
    """The five tools; build once per process and share across turns (they hold no state)."""
    return [_make_tool(name, executor, max_output_chars) for name in TOOL_SPECS]
