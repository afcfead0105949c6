"""The per-request context every ChatKit store and server method receives."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from agents import RunResultStreaming

from backend.agent.context import TurnContext
from backend.auth import User


@dataclass
class AgentRun:
    """The agent run of a turn in progress, kept so a cancelled stream can clean up after it."""

    turn: TurnContext
    result: RunResultStreaming
    stored: bool = False
    """The turn's tool calls are on a stored row (nothing left to keep if the stream stops)."""


@dataclass
class ChatKitContext:
    """Built from the verified token for one ChatKit request; never from the request body."""

    user: User
    """Every store method acts on this user's threads and no one else's."""
    turn: uuid.UUID | None = None
    """For requests that run the agent: the id of the claim held on the thread (one turn at a time)."""
    lock_seconds: float = 60.0
    """How long the claim lasts if the process dies mid-turn."""
    claimed: uuid.UUID | None = None
    """The conversation this request holds the claim on, once it does (released when it ends)."""
    owns_input: bool = False
    """The user message was stored by this request (threads.create / add_user_message), so a turn
    that fails before any tool ran removes it again, as /api/chat stores nothing then."""
    run: AgentRun | None = field(default=None, repr=False)
