"""The run context every tool receives: who the user is, and a log of what the tools did."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

Journal = Callable[[AsyncSession, dict[str, Any], list[dict[str, Any]]], Awaitable[None]]
"""Records one tool call (`{"tool", "arguments", "result"}` and its model items) in the
transaction that made the call's task change."""


@dataclass
class TurnContext:
    """Built from the verified token for one chat turn; never from anything the model writes."""

    user_id: str
    """The token's `sub`. Tools act on this user's tasks and no one else's."""
    sessions: async_sessionmaker[AsyncSession]
    """Where tools open their transactions (a real transaction: the task change and its journal
    record commit together)."""
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
