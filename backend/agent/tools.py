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
from backend.tasks.actions import ACTIONS

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
        "description": "List the user's tasks with their ids. Use it to find the id of a task named in words.",
        "parameters": {
            "type": "object",
            "properties": {
                "status": {
                    "type": "string",
                    "enum": ["all", "pending", "completed"],
                    "description": "Which tasks to list (default: all).",
                }
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


async def run_action(
    ctx: TurnContext,
    name: str,
    arguments: dict[str, Any],
    executor: Executor = in_process,
    call: ResponseFunctionToolCall | None = None,
) -> dict[str, Any]:
    """Run one task action for the context's user; failures come back as `{"error": ...}`."""
    allowed = TOOL_SPECS[name]["parameters"]["properties"]
    kwargs = {k: v for k, v in arguments.items() if k in allowed}
    # Parallel calls finish in any order; the turn lists them in the order the model made them.
    entry: dict[str, Any] = {"tool": name, "arguments": kwargs, "result": {}}
    ctx.tool_calls.append(entry)
    await _notify(ctx, {"type": "tool_call", "tool": name, "arguments": kwargs})

    async def record(session: AsyncSession, result: dict[str, Any]) -> None:
        if ctx.journal is not None:
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
    metrics.tool_call(name, result)
    entry["result"] = result
    await _notify(ctx, {"type": "tool_result", "tool": name, "result": result})
    return result


async def _notify(ctx: TurnContext, event: dict[str, Any]) -> None:
    if ctx.events is not None:
        outcome = ctx.events(event)
        if inspect.isawaitable(outcome):
            await outcome


def _make_tool(name: str, executor: Executor) -> FunctionTool:
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
            result = await run_action(wrapper.context, name, arguments, executor, call)
        return orjson.dumps(result).decode()

    spec = TOOL_SPECS[name]
    return FunctionTool(
        name=name,
        description=spec["description"],
        params_json_schema=spec["parameters"],
        on_invoke_tool=invoke,
        strict_json_schema=False,
    )


def task_tools(executor: Executor = in_process) -> list[FunctionTool]:
    """The five tools; build once per process and share across turns (they hold no state)."""
    return [_make_tool(name, executor) for name in TOOL_SPECS]
