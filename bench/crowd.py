"""W10, the crowd: 200 users chatting within their own limits (every one of them below its
budgets, coming back when Retry-After says) against a model that takes 300 ms a call, next to a
quiet user reading its task list, on a server with the product's default limits.

Target: the quiet user's read p95 at most 5 x its p95 with the crowd idle, with no 5xx; every
turn answered 200, or 429/503 with Retry-After (anything else counts as an error).
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from bench.client import KINDS, Run, percentile, turn_conversation, turn_request
from bench.measure import Bench
from bench.procs import cpu_ms, rss_mb


@dataclass(frozen=True)
class CrowdSizes:
    users: int = 200
    busy_seconds: float = 20.0
    """How long the crowd chats once it has ramped up (the quiet reads run meanwhile)."""
    ramp_seconds: float = 3.0
    quiet_gets: int = 200
    """Per phase, one every 50 ms."""
    latency_ms: float = 300


FULL = CrowdSizes()
SMOKE = CrowdSizes(users=6, busy_seconds=1.0, ramp_seconds=0.5, quiet_gets=10, latency_ms=20)


@dataclass
class Tally:
    """What the crowd's turns were answered."""

    statuses: dict[int, int] = field(default_factory=dict)
    ok: Run = field(default_factory=Run)
    """The turns answered 200: their latencies, and any answer that was not a whole turn."""
    errors: Run = field(default_factory=Run)
    """Answers outside the target: not 200, 429 or 503, or a 429/503 without Retry-After."""

    def count(self, status: int) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1


async def crowd_user(bench: Bench, n: int, stop: asyncio.Event, tally: Tally) -> None:
    """One user's turns, one after another in one conversation; a refusal waits Retry-After."""
    name = f"w10-{n}"
    kind = KINDS[n % len(KINDS)]  # plain, streamed and ChatKit turns alike
    headers = bench.headers(name)
    conversation: str | None = None
    sent = 0
    while not stop.is_set():
        path, body = turn_request(f"{name} task {sent}", conversation, kind)
        sent += 1
        started = time.perf_counter()
        try:
            async with bench.session().post(path, json=body, headers=headers) as r:
                status, raw = r.status, await r.read()
                retry_after = r.headers.get("Retry-After")
        except (aiohttp.ClientError, TimeoutError) as exc:
            tally.errors.error(type(exc).__name__)
            continue
        tally.count(status)
        if status == 200:
            tally.ok.latencies.append((time.perf_counter() - started) * 1000)
            conversation = turn_conversation(tally.ok, raw, conversation, kind)
        elif status in (429, 503) and retry_after:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), float(retry_after))
        else:
            tally.errors.error(f"{status} {retry_after=} {raw[:120]!r}")


@dataclass
class Reads:
    """The quiet user's reads: latencies of those answered, answers by status, failures."""

    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def quiet_reads(base: str, headers: dict[str, str], gets: int) -> Reads:
    """The quiet user's task list, every 50 ms, from a process of its own (see `crowd`)."""

    async def read() -> Reads:
        reads = Reads()
        async with aiohttp.ClientSession(base, timeout=aiohttp.ClientTimeout(total=60)) as http:
            for _ in range(gets):
                started = time.perf_counter()
                try:
                    async with http.get("/api/tasks", headers=headers) as r:
                        await r.read()
                except (aiohttp.ClientError, TimeoutError) as exc:
                    reads.errors.append(type(exc).__name__)
                    continue
                reads.latencies.append((time.perf_counter() - started) * 1000)
                reads.statuses[r.status] = reads.statuses.get(r.status, 0) + 1
                if r.status != 200:
                    reads.errors.append(f"GET /api/tasks {r.status}")
                await asyncio.sleep(0.05)
        return reads

    return asyncio.run(read())


async def warm(bench: Bench) -> None:
    """A fresh server: first requests pay for imports and connections."""
    run = Run()
    await asyncio.gather(*(bench.user(run, f"w10-warm-{u}", 2, k) for u, k in enumerate(KINDS)))
    for _ in range(10):
        await bench.get(run, "/api/tasks", bench.headers("w10-quiet"))
    if run.errors:
        raise RuntimeError(f"W10 warm-up errors: {run.error_samples[:3]}")


async def crowd(bench: Bench, sizes: CrowdSizes = FULL) -> dict[str, Any]:
    """W10: the quiet user's reads with the crowd idle, then while 200 users chat."""
    load_before = os.getloadavg()
    await bench.latency(sizes.latency_ms)
    await warm(bench)
    # The quiet user reads from a process of its own, as a user elsewhere would: in this one its
    # requests would wait for the event loop that runs the crowd's 200 clients.
    loop, quiet = asyncio.get_running_loop(), bench.headers("w10-quiet")
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as apart:
        idle = await loop.run_in_executor(apart, quiet_reads, bench.base, quiet, sizes.quiet_gets)

        tally, stop = Tally(), asyncio.Event()
        peak = [rss_mb(bench.pid)]
        sampler = bench.rss_sampler(peak)
        cpu0, t0 = cpu_ms(bench.pid), time.perf_counter()
        users = [asyncio.create_task(crowd_user(bench, n, stop, tally)) for n in range(sizes.users)]
        await asyncio.sleep(sizes.ramp_seconds)
        reads = loop.run_in_executor(apart, quiet_reads, bench.base, quiet, sizes.quiet_gets)
        await asyncio.sleep(sizes.busy_seconds)
        busy = await reads  # at least `quiet_gets` reads under the crowd, however long they take
    stop.set()
    await asyncio.gather(*users)
    wall = time.perf_counter() - t0
    busy_cpu_share = (cpu_ms(bench.pid) - cpu0) / 1000 / wall
    sampler.cancel()
    await bench.latency(0)
    await bench.close()
    load_after = os.getloadavg()

    idle_p95 = percentile(idle.latencies, 95)
    busy_p95 = percentile(busy.latencies, 95)
    ratio = round(busy_p95 / max(idle_p95, 0.01), 2)
    read_5xx = sum(n for r in (idle, busy) for s, n in r.statuses.items() if s >= 500)
    turns_answered = sum(tally.statuses.values())
    return {
        "users": sizes.users,
        "model_latency_ms": sizes.latency_ms,
        "crowd_seconds": round(wall, 1),
        "turn_answers": ", ".join(f"{n} x {s}" for s, n in sorted(tally.statuses.items())),
        "turns_answered": turns_answered,
        "turns_ok_per_s": round(tally.statuses.get(200, 0) / wall, 1),
        "turn_ok_p50_ms": round(percentile(tally.ok.latencies, 50), 1),
        "turn_ok_p95_ms": round(percentile(tally.ok.latencies, 95), 1),
        "quiet_get_p95_idle_ms": round(idle_p95, 1),
        "quiet_get_p95_busy_ms": round(busy_p95, 1),
        "quiet_get_p95_ratio": ratio,
        "quiet_get_answers": ", ".join(f"{n} x {s}" for s, n in sorted(busy.statuses.items())),
        "quiet_get_5xx": read_5xx,
        "meets_target": ratio <= 5 and read_5xx == 0 and not tally.errors.errors,
        "server_cpu_busy": round(busy_cpu_share, 2),
        "rss_mb_peak": round(max(peak), 1),
        "load_average_before": " ".join(f"{x:.2f}" for x in load_before),
        "load_average_after": " ".join(f"{x:.2f}" for x in load_after),
        # Turns outside the target, incomplete turns, and reads that failed (5xx included).
        "errors": tally.errors.errors + tally.ok.errors + len(idle.errors) + len(busy.errors),
        "error_samples": (tally.errors.error_samples + tally.ok.error_samples + busy.errors)[:5],
    }
