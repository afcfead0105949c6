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
from backend.core.timeutil import Clock

T = TypeVar("T")

MAX_RETRY_AFTER_SECONDS = 30


class ServerBusy(ServiceUnavailable):
    """503: this process already runs MAX_CONCURRENT_TURNS turns, or uses MAX_TURN_CPU."""

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


CPU_SAMPLE_SECONDS = 0.25
"""`CpuLoad` reads the process's CPU time at most this often."""
CPU_SMOOTHING_SECONDS = 1.0
"""...and averages it over about this long."""
ALWAYS_ADMITTED = 4
"""Turns admitted whatever the CPU use: refusals cost CPU too, and a flood of them alone must not
stop every turn."""


class CpuLoad:
    """This process's CPU use as a share of one core, smoothed over about a second.

    Sampled on demand (no background task): each `sample` past CPU_SAMPLE_SECONDS since the last
    folds the share of that stretch into the mean `share`, weighted by its length, so a long idle stretch
    counts fully. The CPU time is the whole process's (every thread), from the kernel.
    """

    def __init__(self, cpu_clock: Clock = time.process_time, clock: Clock = time.monotonic) -> None:
        self.cpu_clock, self.clock = cpu_clock, clock
        self.at, self.cpu = clock(), cpu_clock()
        self.share = 0.0

    def sample(self) -> bool:
        """Fold in the stretch since the last sample if it is CPU_SAMPLE_SECONDS long: True then."""
        now = self.clock()
        elapsed = now - self.at
        if elapsed < CPU_SAMPLE_SECONDS:
            return False
        cpu = self.cpu_clock()
        latest = (cpu - self.cpu) / elapsed
        self.share += min(1.0, elapsed / CPU_SMOOTHING_SECONDS) * (latest - self.share)
        self.at, self.cpu = now, cpu
        return True


class TurnAdmission:
    """At most `limit` chat turns at once in this process, every user and front door together,
    and no new one while the process uses more than `max_cpu` of a core.

    Per-user budgets do not bound the total: 200 users each within their own limits still pile
    up turns whose statements queue for the same connections (and event loop) as everyone's
    reads. Beyond the bound a turn is refused at once (`ServerBusy`, 503 with Retry-After)
    instead of waiting: a queued turn would hold its client's connection and memory while its
    latency grows without bound, whereas a refusal is cheap, tells the client when to come back,
    and lets a load balancer send the retry to another replica. One event loop per process, so
    a plain counter is exact (no lock); every worker process has its own bound.

    The CPU bound is what keeps reads quick: a turn's cost is mostly the event loop's CPU, and
    how many turns fill the loop depends on the model's latency (64 turns of a 300 ms model kept
    one loop 90 % busy, and a quiet user's reads waited 10-20 x their idle time behind them in
    W10; 3 s turns would need ten times as many). A read waits for the loop a few times, and
    that wait grows steeply as the loop nears full, so new turns stop at `max_cpu` (1.0: no
    CPU bound). It works as a second count bound that the CPU moves (`_cpu_bound`), so turns
    are admitted as slots free up rather than in a burst each time the CPU dips.
    ALWAYS_ADMITTED turns run whatever the CPU use.

    Retry-After is the recent mean turn duration (rounded up, 1-30 s), by when every slot has
    turned over about once, times a back-off that keeps the refused coming back at about the
    rate turns end: each second it is multiplied by refusals / (2 x turns ended) in that second,
    between x0.5 and x2, within 1-30. A fixed 1 s brought W10's crowd of 200 back every
    second: 150 refusals a second for 40 turns, and answering them cost the CPU that running
    turns and reads need.
    """

    def __init__(self, limit: int, max_cpu: float = 1.0, load: CpuLoad | None = None) -> None:
        self.limit = limit
        self.max_cpu = max_cpu
        self.load = load or CpuLoad()
        self.active = 0
        self.mean_seconds = 1.0
        """Moving mean of how long admitted turns held their slot."""
        self.allowed = limit
        """Turns the CPU bound admits at once (`_cpu_bound`), ALWAYS_ADMITTED to `limit`."""
        self.backoff = 1.0
        """What Retry-After multiplies the mean turn duration by (see the class)."""
        self._refused = self._ended = 0
        self._counted_since = self.load.clock()

    def ended(self, seconds: float) -> None:
        self.active -= 1
        self._ended += 1
        self.mean_seconds += 0.05 * (seconds - self.mean_seconds)

    def check(self) -> None:
        """Refuse now if no slot is free (a pre-check: `admit` still decides)."""
        if self._cpu_bound() or self.active >= self.limit:  # the bound samples the CPU first
            self._refused += 1
            raise ServerBusy(self.retry_after())

    def retry_after(self) -> int:
        """Seconds a refused turn should wait: mean turn duration x back-off, 1-30."""
        now = self.load.clock()
        if now - self._counted_since >= 1.0:
            ratio = min(2.0, max(0.5, self._refused / max(1, 2 * self._ended)))
            self.backoff = min(float(MAX_RETRY_AFTER_SECONDS), max(1.0, self.backoff * ratio))
            self._refused = self._ended = 0
            self._counted_since = now
        wait = math.ceil(self.mean_seconds * self.backoff)
        return min(MAX_RETRY_AFTER_SECONDS, max(1, wait))

    def _cpu_bound(self) -> bool:
        """Whether the CPU bound refuses a turn now: past `allowed` turns, which each CPU sample
        lowers by a tenth while the process is over `max_cpu` and raises by one while under (so
        turns are admitted as slots free up, not in a burst whenever a sample says "under")."""
        if self.max_cpu >= 1.0:
            return False
        if self.load.sample():
            if self.load.share > self.max_cpu:
                self.allowed = max(ALWAYS_ADMITTED, int(self.allowed * 0.9))
            elif self.active >= self.allowed - 1:  # only grow a bound that is being used
                self.allowed = min(self.limit, self.allowed + 1)
        return self.active >= self.allowed

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
            self.admission = TurnAdmission(
                self.settings.max_concurrent_turns, self.settings.max_turn_cpu
            )

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
