"""One server under load: its workload's turns, round by round, with the server's CPU time and
memory, the rest of the machine's, and (with --profile) py-spy's samples of each stretch."""

from __future__ import annotations

import asyncio
import functools
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.client import KINDS, Client, Run
from bench.procs import (
    cpu_ms,
    machine_jiffies,
    own_cpu_ms,
    rss_mb,
    start_profiler,
    stop_profiler,
    worker_pids,
)
from bench.seed import seed_conversations


@dataclass
class Load:
    """One workload on one server, accumulated over its rounds."""

    kind: str
    prefix: str
    users: int
    run: Run = field(default_factory=Run)
    conversations: dict[str, str | None] = field(default_factory=dict)
    turns_per_user: int = 0
    wall: float = 0.0
    cpu: float = 0.0
    rss_peak: float = 0.0
    other_cpu: dict[str, float] = field(default_factory=dict)
    """CPU ms of the bench's other processes (PostgreSQL, the stub, the load generator)."""
    machine: list[int] = field(default_factory=lambda: [0, 0])
    """Busy and total ticks of the whole machine (other agents' work included)."""
    round_cpu: list[float] = field(default_factory=list)
    """Server CPU ms per turn in each round."""

    @property
    def turns(self) -> int:
        return self.users * self.turns_per_user


class Bench(Client):
    """The server `pid` (uvicorn and everything under it) on `base`, its database at `db_url`."""

    def __init__(self, base: str, stub: str, pid: int, data_dir: Path, db_url: str) -> None:
        super().__init__(base, stub, data_dir)
        self.pid = pid
        self.db_url = db_url
        self.worker_pids: list[int] = []
        self.profile_dir: Path | None = None
        self.others: dict[str, Callable[[], float]] = {
            "load_generator": functools.partial(own_cpu_ms, os.getpid())  # not its children
        }
        """CPU ms of the processes reported next to the server (main adds the stub, PostgreSQL)."""

    def rss_sampler(self, peak: list[float]) -> asyncio.Task[None]:
        """Appends the server's RSS to `peak` every 50 ms until cancelled."""

        async def sample() -> None:
            while True:
                peak.append(rss_mb(self.pid))
                await asyncio.sleep(0.05)

        return asyncio.create_task(sample())

    async def load_round(self, load: Load, turns: int) -> None:
        """`turns` more turns for each of the load's users, in their own conversations."""
        first = load.turns_per_user

        async def user(name: str) -> None:
            headers = self.headers(name)
            for n in range(first, first + turns):
                load.conversations[name] = await self.turn(
                    load.run, headers, f"{name} task {n}", load.conversations.get(name), load.kind
                )

        peak = [rss_mb(self.pid)]
        sampler = self.rss_sampler(peak)
        profiler = start_profiler(self.pid, self.profile_dir, load.prefix)
        others0 = {name: meter() for name, meter in self.others.items()}
        busy0, total0 = machine_jiffies()
        cpu0, t0 = cpu_ms(self.pid), time.perf_counter()
        await asyncio.gather(*(user(f"{load.prefix}-{u}") for u in range(load.users)))
        load.wall += time.perf_counter() - t0
        spent = cpu_ms(self.pid) - cpu0
        load.cpu += spent
        load.round_cpu.append(spent / (load.users * turns))
        busy, total = machine_jiffies()
        load.machine[0] += busy - busy0
        load.machine[1] += total - total0
        for name, meter in self.others.items():
            load.other_cpu[name] = load.other_cpu.get(name, 0) + meter() - others0[name]
        sampler.cancel()
        stop_profiler(profiler)
        load.turns_per_user += turns
        load.rss_peak = max(load.rss_peak, *peak)

    async def warm_up(self, users: int, workers: int) -> None:
        """Every worker started (idle: its imports and start-up done), then some turns of each kind.

        /health answers as soon as one worker is up; first requests pay for imports and
        connections.
        """
        deadline, idle = time.monotonic() + 120, 0
        while idle < 3:
            pids = worker_pids(self.pid)
            before = sum(own_cpu_ms(p) for p in pids)
            await asyncio.sleep(0.3)
            started = workers == 1 or len(pids) == workers
            idle = idle + 1 if started and sum(own_cpu_ms(p) for p in pids) - before < 15 else 0
            if time.monotonic() > deadline:
                raise RuntimeError(f"{workers} workers did not settle: {pids}")
        warm = Run()
        await asyncio.gather(
            *(
                self.user(warm, f"warm-{kind}-{u}", 2, kind)
                for kind in KINDS
                for u in range(max(1, users // 2))
            )
        )
        if warm.errors:
            raise RuntimeError(f"warm-up errors: {warm.error_samples[:3]}")
        self.worker_pids = worker_pids(self.pid)

    def worker_restarts(self) -> int:
        """Workers replaced since the warm-up (uvicorn kills one that misses its health check)."""
        return len(set(self.worker_pids) - set(worker_pids(self.pid)))

    async def history_turns(self, user: str, messages: int, samples: int) -> tuple[float, float]:
        """Median latency and mean server CPU of one turn in a conversation of `messages`.

        Each turn goes to its own freshly seeded conversation, so the history does not grow
        over the samples (a 10-message conversation would be a 50-message one by the 20th turn).
        """
        run = Run()
        headers = self.headers(user)
        conversations = seed_conversations(self.db_url, user, messages, samples)
        profiler = start_profiler(self.pid, self.profile_dir, user)
        cpu0 = cpu_ms(self.pid)
        for n, conversation in enumerate(conversations):
            await self.turn(run, headers, f"{user} more {n}", conversation)
        cpu = (cpu_ms(self.pid) - cpu0) / samples
        stop_profiler(profiler)
        if run.errors:
            raise RuntimeError(f"W4 errors: {run.error_samples[:3]}")
        return statistics.median(run.latencies), cpu
