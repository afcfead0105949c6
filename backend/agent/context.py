"""The run context every tool receives: who the user is, and a log of what the tools did."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Call:
    """One tool call as the model made it."""

    name: str
    arguments: dict[str, Any]
    """Only the tool's own parameters (anything else the model sent is dropped)."""
    item: dict[str, Any]
    """The model's function-call item, as it is replayed (provider extras included)."""


class Journal(Protocol):
    """Where a turn's tool calls run and are recorded (`chat.journal`)."""

    async def run(self, call: Call, max_output: int) -> str:
        """Run `call` for the journal's user; its result as JSON text of at most `max_output`
        characters, recorded with the change it made. Failures raise `AppError`."""
        ...

    async def record(self, call: Call, output: str) -> None:
        """Record a result obtained elsewhere (a remote MCP server's)."""
        ...


@dataclass
class TurnContext:
    """Built from the verified token for one chat turn; never from anything the model writes."""

    user_id: str
    """The token's `sub`. Tools act on this user's tasks and no one else's."""
    journal: Journal = field(repr=False)
    """Runs the tools' actions for this user and records them (`chat.journal`)."""
    token: str = field(default="", repr=False)
    """The caller's bearer token, forwarded only when tools run over our own MCP server."""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    """Every tool the agent ran in this turn, in order: {"tool", "arguments", "result"}."""
    events: Callable[[dict[str, Any]], Awaitable[None] | None] | None = field(
        default=None, repr=False
    )
    """Streaming turns: told `tool_call` before and `tool_result` after each tool runs."""
