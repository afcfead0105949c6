"""The agent's task tools: one per registered action (`tasks.registry`), thin adapters from the
Agents SDK to the turn's journal, which runs and records each call.

None of them has a user parameter: the user comes from the run context. A failed action becomes a
message the model can read and recover from.
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
from backend.core.errors import AppError
from backend.observability import metrics
from backend.tasks.registry import ACTIONS, MAX_OUTPUT_CHARS, cap_output

log = logging.getLogger(__name__)

Executor = Callable[[TurnContext, Call, int], Awaitable[str]]
"""Runs a call for the context's user, journaled when the context has a journal; returns the
result as JSON text of at most the given number of characters."""


async def in_process(ctx: TurnContext, call: Call, max_output_chars: int) -> str:
    """The default transport: the turn's journal runs the action (a write and its record are
    one statement)."""
    return await ctx.journal.run(call, max_output_chars)


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
    action = ACTIONS[name]
    kwargs = action.arguments(arguments)
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
        error = f"{name} needs: {', '.join(action.required)}"
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

    action = ACTIONS[name]
    return FunctionTool(
        name=name,
        description=action.description,
        params_json_schema=action.parameters,
        on_invoke_tool=invoke,
        strict_json_schema=False,
    )


def task_tools(
    executor: Executor = in_process, max_output_chars: int = MAX_OUTPUT_CHARS
) -> list[FunctionTool]:
    """One tool per registered action; build once per process and share across turns (they hold
    no state)."""
    return [_make_tool(name, executor, max_output_chars) for name in ACTIONS]
