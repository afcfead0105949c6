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
from agents import FunctionTool
from agents.tool_context import ToolContext
from openai.types.responses import ResponseFunctionToolCall

from backend.agent.context import Call, TurnContext
from backend.errors import AppError
from backend.observability import metrics
from backend.tasks import actions
from backend.tasks.actions import MAX_OUTPUT_CHARS, cap_output

log = logging.getLogger(__name__)

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


Executor = Callable[[TurnContext, Call, int], Awaitable[str]]
"""Runs a call for the context's user, journaled when the context has a journal; returns the
result as JSON text of at most the given number of characters."""


async def in_process(ctx: TurnContext, call: Call, max_output_chars: int) -> str:
    """The default transport: a write action and its journal record are one statement."""
    if ctx.journal is None or call.name in actions.READS:
        async with ctx.engine.connect() as db:
            output = await actions.run(
                db,
                call.name,
                ctx.user_id,
                call.arguments,
                max_tasks=ctx.max_tasks,
                max_output_chars=max_output_chars,
            )
        if ctx.journal is not None:  # a read: recorded after it, in a statement of its own
            await ctx.journal(actions.GIVEN_OUTPUT, {"output": output}, call)
        return output
    write = actions.plan(call.name, ctx.user_id, call.arguments, ctx.max_tasks)
    assert write is not None  # not a read
    params = {**write.params, "max_output": max_output_chars}
    recorded = await ctx.journal(write.ctes, params, call)
    if recorded is None:
        raise write.missing
    return recorded


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


async def run_action(
    ctx: TurnContext,
    name: str,
    arguments: dict[str, Any],
    executor: Executor = in_process,
    call: ResponseFunctionToolCall | None = None,
    max_output_chars: int = MAX_OUTPUT_CHARS,
) -> str:
    """Run one task action for the context's user: its result as JSON text (what the model
    reads and the journal keeps), `{"error": ...}` if it failed, at most `max_output_chars`."""
    allowed = TOOL_SPECS[name]["parameters"]["properties"]
    kwargs = {k: v for k, v in arguments.items() if k in allowed}
    # Parallel calls finish in any order; the turn lists them in the order the model made them.
    entry: dict[str, Any] = {"tool": name, "arguments": kwargs, "result": {}}
    ctx.tool_calls.append(entry)
    await _notify(ctx, {"type": "tool_call", "tool": name, "arguments": kwargs})
    item = _call_item(call, name, kwargs)
    error = None
    try:
        output = await executor(ctx, Call(name, kwargs, item), max_output_chars)
    except AppError as exc:
        error = exc.detail
    except TypeError:
        error = f"{name} needs: {', '.join(TOOL_SPECS[name]['parameters'].get('required', []))}"
    if error is not None:
        output = orjson.dumps(cap_output({"error": error}, max_output_chars)).decode()
    result = orjson.loads(output)
    metrics.tool_call(name, result)
    entry["result"] = result
    await _notify(ctx, {"type": "tool_result", "tool": name, "result": result})
    return output


async def _notify(ctx: TurnContext, event: dict[str, Any]) -> None:
    if ctx.events is not None:
        outcome = ctx.events(event)
        if inspect.isawaitable(outcome):
            await outcome


def _make_tool(name: str, executor: Executor, max_output_chars: int) -> FunctionTool:
    async def invoke(context: ToolContext[TurnContext], raw_arguments: str) -> str:
        try:
            arguments = orjson.loads(raw_arguments or "{}")
        except orjson.JSONDecodeError:
            arguments = None
        if not isinstance(arguments, dict):
            result: dict[str, Any] = {"error": "arguments must be a JSON object"}
            context.context.tool_calls.append({"tool": name, "arguments": {}, "result": result})
            return orjson.dumps(result).decode()
        call = context.tool_call if isinstance(context, ToolContext) else None
        return await run_action(context.context, name, arguments, executor, call, max_output_chars)

    # Resolved, not strings: the SDK reads them on every call to pick the context it passes
    # (a ToolContext, with the model's call, for this annotation).
    invoke.__annotations__ = {"context": ToolContext, "raw_arguments": str, "return": str}

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
