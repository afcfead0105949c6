"""The process's turn admission: at most MAX_CONCURRENT_TURNS turns at once."""

from __future__ import annotations

import pytest

from backend.chat.runtime import ServerBusy, TurnAdmission


def test_the_bound_refuses_the_turn_past_it_and_a_release_frees_its_slot() -> None:
    admission = TurnAdmission(2)
    first, _ = admission.admit(), admission.admit()
    with pytest.raises(ServerBusy) as refused:
        admission.admit()
    assert refused.value.headers == {"Retry-After": "1"}
    first.release()
    first.release()  # idempotent
    assert admission.active == 1
    admission.admit()


def test_retry_after_follows_the_mean_turn_duration_within_1_to_30_s() -> None:
    admission = TurnAdmission(1)
    slot = admission.admit()
    for seconds in (10.0,) * 200:  # turns of 10 s lately
        admission.active += 1
        admission.ended(seconds)
    with pytest.raises(ServerBusy) as refused:
        admission.admit()
    assert refused.value.headers == {"Retry-After": "10"}
    for _ in range(400):
        admission.active += 1
        admission.ended(600.0)
    with pytest.raises(ServerBusy) as capped:
        admission.admit()
    assert capped.value.headers == {"Retry-After": "30"}
    slot.release()
