"""The run context every tool receives: who the user is, and a log of what the tools did."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncEngine

from backend.tasks.service import MAX_TASKS_PER_USER


@dataclass(frozen=True, slots=True)
class Call:
    """One tool call as the model made it."""

    name: str
    arguments: dict[str, Any]
    """Only the tool's own parameters (anything else the model sent is dropped)."""
    item: dict[str, Any]
    """The model's function-call item, as it is replayed (provider extras included)."""


class Journal(Protocol):
    """The turn's journal (`chat.turn`): records a tool call in the statement that made it."""

    async def __call__(self, ctes: str, params: dict[str, Any], call: Call) -> str | None:
        """Run `ctes`, which define `output(text)` (the call's result as JSON text), with the
        record of `call` in one statement; the output, or None if `output` had no row."""
        ...


@dataclass
class TurnContext:
    """Built from the verified token for one chat turn; never from anything the model writes."""

    user_id: str
    """The token's `sub`. Tools act on this user's tasks and no one else's."""
    engine: AsyncEngine
    """Where tools run their statements: autocommit (each write action is one statement)."""
    max_tasks: int = MAX_TASKS_PER_USER
    token: str = field(default="", repr=False)
    """The caller's bearer token, forwarded only when tools run over our own MCP server."""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    """Every tool the agent ran in this turn, in order: {"tool", "arguments", "result"}."""
    events: Callable[[dict[str, Any]], Awaitable[None] | None] | None = field(
        default=None, repr=False
    )
    """Streaming turns: told `tool_call` before and `tool_result` after each tool runs."""
    journal: Journal | None = field(default=None, repr=False)
    """The turn's journal (None outside a chat turn)."""
