"""W7, the noisy neighbour: a user at every cap next to a quiet one, on a server with the
product's default turn rate limit."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

import aiohttp

from bench.client import Client, Run, percentile
from bench.measure import Bench
from bench.procs import cpu_ms, rss_mb
from bench.seed import seed_tasks
from bench.sizes import Sizes


async def quiet_user(client: Client, gets: Run, turns: Run, sizes: Sizes) -> None:
    """The second user: its task list every 50 ms, and chat turns one after another."""
    headers = client.headers("w7-quiet")

    async def read() -> None:
        for _ in range(sizes.w7_quiet_gets):
            await client.get(gets, "/api/tasks", headers)
            await asyncio.sleep(0.05)

    async def chat() -> None:
        conversation = None
        for n in range(sizes.w7_quiet_turns):
            conversation = await client.turn(turns, headers, f"quiet {n}", conversation)

    await asyncio.gather(read(), chat())


async def noisy_user(
    client: Client, stop: asyncio.Event, run: Run, statuses: dict[int, int], sizes: Sizes
) -> None:
    """The first user at every cap: listing turns back to back, and streams nobody reads."""
    headers = client.headers("w7-noisy")

    async def lister() -> None:
        conversation = None
        while not stop.is_set():
            body = {"message": "list my tasks", "conversation_id": conversation}
            try:
                async with client.session().post("/api/chat", json=body, headers=headers) as r:
                    status, raw = r.status, await r.read()
                    retry_after = float(r.headers.get("Retry-After") or 1)
            except (aiohttp.ClientError, TimeoutError) as exc:
                run.error(type(exc).__name__)
                continue
            statuses[status] = statuses.get(status, 0) + 1
            if status == 200:
                conversation = json.loads(raw)["conversation_id"]
            elif status == 429:  # at the rate limit: come back when told to
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), retry_after)
            else:
                run.error(f"{status} {raw[:120]!r}")

    async def unread_streams() -> None:
        # Raw sockets: the request is sent, the SSE answer is never read.
        port = int(client.base.rsplit(":", 1)[1])
        body = json.dumps({"message": "list my tasks", "stream": True}).encode()
        head = (
            f"POST /api/chat HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: {headers['Authorization']}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        while not stop.is_set():
            writers = []
            for _ in range(sizes.w7_streams):
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(head + body)
                writers.append(writer)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 2)
            for writer in writers:
                writer.close()

    await asyncio.gather(*(lister() for _ in range(sizes.w7_turners)), unread_streams())


async def noisy_neighbour(bench: Bench, sizes: Sizes) -> dict[str, Any]:
    """W7: the quiet user's p95 with the noisy user idle, then with it at every cap.

    Runs on its own server with the default turn rate limit (RATE_LIMIT_REQUESTS), which the
    noisy user reaches within a second: its listers then come back when Retry-After says.
    """
    await bench.latency(sizes.w7_latency_ms)
    warm = Run()  # a fresh server: first requests pay for imports and connections
    await asyncio.gather(*(bench.user(warm, f"w7-warm-{u}", 2) for u in range(5)))
    for _ in range(10):
        await bench.get(warm, "/api/tasks", bench.headers("w7-warm-0"))
    seed_tasks(bench.db_url, "w7-noisy", sizes.w7_tasks)
    one_more = {"title": "one more"}
    async with bench.session().post(
        "/api/tasks", json=one_more, headers=bench.headers("w7-noisy")
    ) as r:
        at_cap = r.status == 409  # with the default MAX_TASKS_PER_USER (1000)
    idle_gets, idle_turns = Run(), Run()
    await quiet_user(bench, idle_gets, idle_turns, sizes)
    busy_gets, busy_turns, noise = Run(), Run(), Run()
    stop = asyncio.Event()
    peak = [rss_mb(bench.pid)]
    sampler = bench.rss_sampler(peak)
    statuses: dict[int, int] = {}
    cpu0, t0 = cpu_ms(bench.pid), time.perf_counter()
    noisy = asyncio.create_task(noisy_user(bench, stop, noise, statuses, sizes))
    await quiet_user(bench, busy_gets, busy_turns, sizes)
    stop.set()
    sampler.cancel()
    await noisy
    busy_cpu_share = (cpu_ms(bench.pid) - cpu0) / 1000 / (time.perf_counter() - t0)
    await bench.latency(0)

    def ratio(busy: Run, idle: Run) -> float:
        return round(percentile(busy.latencies, 95) / max(percentile(idle.latencies, 95), 0.01), 2)

    return {
        "noisy_tasks": sizes.w7_tasks,
        "noisy_refused_one_more_task": at_cap,
        "noisy_answers": ", ".join(f"{n} x {code}" for code, n in sorted(statuses.items())),
        "noisy_errors": noise.errors,
        "server_cpu_busy": round(busy_cpu_share, 2),
        "quiet_get_p95_idle_ms": round(percentile(idle_gets.latencies, 95), 1),
        "quiet_get_p95_busy_ms": round(percentile(busy_gets.latencies, 95), 1),
        "quiet_get_p95_ratio": ratio(busy_gets, idle_gets),
        "quiet_turn_p95_idle_ms": round(percentile(idle_turns.latencies, 95), 1),
        "quiet_turn_p95_busy_ms": round(percentile(busy_turns.latencies, 95), 1),
        "quiet_turn_p95_ratio": ratio(busy_turns, idle_turns),
        "errors": idle_gets.errors + idle_turns.errors + busy_gets.errors + busy_turns.errors,
        "rss_mb_peak": round(max(peak), 1),
        "error_samples": (idle_gets.error_samples + busy_gets.error_samples)[:3]
        + (idle_turns.error_samples + busy_turns.error_samples + noise.error_samples)[:3],
    }
