"""What a chat turn needs from the process (settings, the autocommit engine, the agent), built
once in the lifespan, and the turns it keeps running in the background."""

from __future__ import annotations

import asyncio
import copy
from dataclasses import dataclass, field
from typing import Any

from agents import Agent
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.agent.context import TurnContext
from backend.core.config import Settings


@dataclass
class ChatRuntime:
    """What a turn needs from the process: built once in the lifespan."""

    settings: Settings
    autocommit_engine: AsyncEngine
    """Single-statement units: the journal's statements, and a tool's task change with its
    record, are each atomic on their own."""
    agent: Agent[TurnContext]
    background: set[asyncio.Task[Any]] = field(default_factory=set)
    """Turns whose clients left and clean-ups being retried (kept referenced; awaited at shutdown)."""

    def agent_for_run(self) -> Agent[TurnContext]:
        """A shallow copy for one run: the same tools and model, its own identity.

        The SDK checks every concurrent run of one Agent object against all the others (to detect
        tools changing mid-run), which costs O(concurrent runs) per step; a copy per run keeps
        that check O(1). The copy holds nothing per user. (`copy.copy`, not `Agent.clone`: the
        clone re-validates the agent, resolving its type hints, on every turn.)
        """
        return copy.copy(self.agent)

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)
        return task
