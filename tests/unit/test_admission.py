"""The process's turn admission: a bound on turns at once, and none more while out of CPU."""

from __future__ import annotations

import asyncio
import time

import pytest

from backend.chat.runtime import ServerBusy, TurnAdmission


def test_the_bound_refuses_the_turn_past_it_and_a_release_frees_its_slot() -> None:
    admission = TurnAdmission(2)
    first, _ = admission.admit(), admission.admit()
    with pytest.raises(ServerBusy):
        admission.admit()
    first.release()
    first.release()  # idempotent
    assert admission.active == 1
    admission.admit()


def test_a_late_loop_refuses_new_turns_only_while_one_runs() -> None:
    admission = TurnAdmission(10, max_lag=0.02)
    for _ in range(10):
        admission.observe_lag(0.1)
    assert admission.lag > 0.02
    slot = admission.admit()  # nothing running: a process always makes progress
    with pytest.raises(ServerBusy) as refused:
        admission.admit()
    assert refused.value.headers == {"Retry-After": "1"}
    for _ in range(20):
        admission.observe_lag(0.0)
    assert admission.lag < 0.02
    admission.admit()
    slot.release()


def test_lag_off_and_an_early_tick_count_for_nothing() -> None:
    off = TurnAdmission(10)  # max_lag 0: lateness is not considered
    off.observe_lag(5.0)
    off.admit(), off.admit()
    on = TurnAdmission(10, max_lag=0.02)
    on.observe_lag(-1.0)  # a tick cannot be early; it counts as on time
    assert on.lag == 0.0


async def test_watch_measures_how_late_the_loop_runs() -> None:
    admission = TurnAdmission(10, max_lag=0.02)
    watch = asyncio.create_task(admission.watch())
    try:
        await asyncio.sleep(0.1)
        assert admission.lag < 0.02
        for _ in range(5):
            time.sleep(0.1)  # noqa: ASYNC251 - the loop is busy: its ticks come late
            await asyncio.sleep(0)
        assert admission.lag > 0.02
    finally:
        watch.cancel()
