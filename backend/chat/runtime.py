"""What a chat turn needs from the process (settings, the autocommit engine, the agent), built
once in the lifespan, the turns it keeps running in the background, and the process's bound on
turns running at once (`TurnAdmission`)."""

from __future__ import annotations

import asyncio
import copy
import math
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, TypeVar

from agents import Agent
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.agent.context import TurnContext
from backend.core.config import Settings
from backend.core.errors import ServiceUnavailable

T = TypeVar("T")

MAX_RETRY_AFTER_SECONDS = 30


class ServerBusy(ServiceUnavailable):
    """503: this process already runs MAX_CONCURRENT_TURNS turns."""

    code = "server_busy"
    detail = "The server is busy with other chat turns; try again shortly"

    def __init__(self, retry_after: int = 1) -> None:
        super().__init__(headers={"Retry-After": str(retry_after)})


class TurnSlot:
    """One admitted turn's place; `release` gives it back (idempotent: every path may call it)."""

    __slots__ = ("_admission", "_since")

    def __init__(self, admission: TurnAdmission | None = None) -> None:
        self._admission: TurnAdmission | None = admission
        self._since = time.monotonic()

    def release(self) -> None:
        if self._admission is not None:
            self._admission.ended(time.monotonic() - self._since)
            self._admission = None

    def kept_by(self, owner: T) -> T:
        """`owner`, which gives the slot back when it is collected (a backstop for a turn that
        is dropped without being run; every path that runs one releases it explicitly)."""
        weakref.finalize(owner, self.release)
        return owner


class TurnAdmission:
    """At most `limit` chat turns at once in this process, every user and front door together.

    Per-user budgets do not bound the total: 200 users each within their own limits still pile
    up turns whose statements queue for the same connections (and event loop) as everyone's
    reads. Beyond the bound a turn is refused at once (`ServerBusy`, 503 with Retry-After)
    instead of waiting: a queued turn would hold its client's connection and memory while its
    latency grows without bound, whereas a refusal is cheap, tells the client when to come back,
    and lets a load balancer send the retry to another replica. One event loop per process, so
    a plain counter is exact (no lock); every worker process has its own bound.

    Retry-After is the recent mean turn duration (rounded up, 1-30 s): by then every slot has
    turned over about once. A fixed 1 s would bring a crowd back every second, and answering
    those refusals alone costs the CPU the running turns and reads need (measured in W10).
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0
        self.mean_seconds = 1.0
        """Moving mean of how long admitted turns held their slot."""

    def ended(self, seconds: float) -> None:
        self.active -= 1
        self.mean_seconds += 0.05 * (seconds - self.mean_seconds)

    def check(self) -> None:
        """Refuse now if no slot is free (a pre-check: `admit` still decides)."""
        if self.active >= self.limit:
            wait = min(MAX_RETRY_AFTER_SECONDS, max(1, math.ceil(self.mean_seconds)))
            raise ServerBusy(wait)

    def admit(self) -> TurnSlot:
        """A slot for one turn, or `ServerBusy`."""
        self.check()
        self.active += 1
        return TurnSlot(self)


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
    admission: TurnAdmission | None = None
    """The process's bound on turns running at once (MAX_CONCURRENT_TURNS); built from the
    settings when not given. Copies of the runtime share it."""

    def __post_init__(self) -> None:
        if self.admission is None:
            self.admission = TurnAdmission(self.settings.max_concurrent_turns)

    def admit(self) -> TurnSlot:
        """A slot for one turn (503 `server_busy` when the process runs as many as it may)."""
        assert self.admission is not None
        return self.admission.admit()

    def check_admission(self) -> None:
        """503 `server_busy` now if no turn slot is free (before a turn spends a budget)."""
        assert self.admission is not None
        self.admission.check()

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
