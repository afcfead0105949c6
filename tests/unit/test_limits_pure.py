"""Bounded by design: every limit on what one user can grow, and a 4xx where a 500 used to be."""

from __future__ import annotations

import asyncio
import time

import orjson

from backend.chat.history import count_tokens, count_tokens_async, warm_up
from backend.tasks.registry import cap_output


def test_cap_output_keeps_whole_tasks_that_fit() -> None:
    tasks = [
        {"id": n, "title": "t" * 200, "description": "d" * 2000, "completed": False}
        for n in range(50)
    ]
    capped = cap_output({"tasks": tasks, "count": 900}, 16_000)
    assert len(orjson.dumps(capped).decode()) <= 16_000
    assert 1 <= len(capped["tasks"]) < 50 and capped["tasks"] == tasks[: len(capped["tasks"])]
    assert capped["count"] == 900 and f"first {len(capped['tasks'])} of 900" in capped["hint"]
    small = {"tasks": tasks[:1], "count": 1}
    assert cap_output(small, 16_000) is small
    other = cap_output({"error": "x" * 50_000}, 4000)
    assert other["truncated"] is True and len(orjson.dumps(other)) <= 4000


async def test_count_tokens_async_matches_and_leaves_the_loop_free() -> None:
    warm_up()
    small = "Buy milk"
    items = [{"type": "function_call_output", "output": "x" * 100}]
    assert await count_tokens_async(small, items) == count_tokens(small, items)
    large = "Buy milk and eggs, then call mom. " * 30_000  # ~1 MB: ~100 ms of counting
    expected = count_tokens(large)
    ticks = 0
    stop = asyncio.Event()

    async def tick() -> None:
        nonlocal ticks
        while not stop.is_set():
            await asyncio.sleep(0.001)
            ticks += 1

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0.005)
    before = ticks
    started = time.perf_counter()
    assert await count_tokens_async(large) == expected
    stop.set()
    await ticker
    # Counting inline would let the ticker run 0 times while it lasted.
    assert ticks - before >= 10, (ticks - before, time.perf_counter() - started)
