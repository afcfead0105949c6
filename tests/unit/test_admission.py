"""The process's turn admission: at most MAX_CONCURRENT_TURNS turns at once, and none while the
process uses more than MAX_TURN_CPU of a core."""

from __future__ import annotations

import pytest

from backend.chat.runtime import ALWAYS_ADMITTED, CpuLoad, ServerBusy, TurnAdmission, TurnSlot


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


class Clocks:
    """Wall and CPU time a test moves by hand."""

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0

    def run(self, seconds: float, cpu_share: float) -> None:
        self.wall += seconds
        self.cpu += seconds * cpu_share


def test_cpu_load_follows_the_process_s_share_of_a_core_over_about_a_second() -> None:
    clocks = Clocks()
    load = CpuLoad(lambda: clocks.cpu, lambda: clocks.wall)
    for _ in range(8):
        clocks.run(0.25, 0.9)
        assert load.sample()
    assert load.share == pytest.approx(0.9, abs=0.1)
    clocks.run(0.1, 0.0)  # read again sooner than CPU_SAMPLE_SECONDS: the same figure
    assert not load.sample()
    assert load.share == pytest.approx(0.9, abs=0.1)
    clocks.run(5.0, 0.05)  # a long quiet stretch counts fully
    assert load.sample()
    assert load.share == pytest.approx(0.05, abs=0.01)


def _admit_all(admission: TurnAdmission) -> list[TurnSlot]:
    """Every turn the admission takes now."""
    slots = []
    while True:
        try:
            slots.append(admission.admit())
        except ServerBusy:
            return slots


def test_new_turns_are_refused_while_the_process_is_over_its_cpu_share() -> None:
    clocks = Clocks()
    admission = TurnAdmission(64, 0.5, CpuLoad(lambda: clocks.cpu, lambda: clocks.wall))
    slots = [admission.admit() for _ in range(ALWAYS_ADMITTED)]
    # Over its share, the bound shrinks by a tenth a sample, to the turns always admitted.
    for _ in range(40):
        clocks.run(0.25, 0.9)
        slots += _admit_all(admission)
    assert admission.allowed == ALWAYS_ADMITTED
    with pytest.raises(ServerBusy) as refused:
        admission.admit()
    assert int(refused.value.headers["Retry-After"]) >= 1
    for slot in slots[ALWAYS_ADMITTED - 1 :]:
        slot.release()
    slots = [*slots[: ALWAYS_ADMITTED - 1], admission.admit()]  # those run whatever the CPU
    # Under its share again, one more turn a sample (as slots are used, not in a burst).
    clocks.run(2.0, 0.2)
    slots += _admit_all(admission)
    for _ in range(10):
        clocks.run(0.25, 0.2)
        slots += _admit_all(admission)
    assert admission.active == admission.allowed == ALWAYS_ADMITTED + 11
    for slot in slots:
        slot.release()


def test_retry_after_backs_off_while_refusals_outnumber_ending_turns() -> None:
    clocks = Clocks()
    admission = TurnAdmission(1, 1.0, CpuLoad(lambda: clocks.cpu, lambda: clocks.wall))
    slot = admission.admit()

    def retry_after() -> int:
        with pytest.raises(ServerBusy) as refused:
            admission.admit()
        return int(refused.value.headers["Retry-After"])

    waits = []
    for _ in range(7):  # a crowd refused every second, no turn ending: x2 a second, up to 30
        waits.append([retry_after() for _ in range(10)][-1])
        clocks.run(1.0, 0.0)
    assert waits == [1, 2, 4, 8, 16, 30, 30]
    slot.release()
    for _ in range(6):  # turns end and nobody is refused: halved each second, down to 1
        clocks.run(1.0, 0.0)
        admission.admit().release()
        assert admission.retry_after() >= 1
    assert admission.retry_after() == 1


def test_a_cpu_share_of_one_core_turns_the_cpu_bound_off() -> None:
    clocks = Clocks()
    admission = TurnAdmission(8, 1.0, CpuLoad(lambda: clocks.cpu, lambda: clocks.wall))
    clocks.run(1.0, 1.0)
    slots = [admission.admit() for _ in range(8)]
    with pytest.raises(ServerBusy):  # the count bound still holds
        admission.admit()
    for slot in slots:
        slot.release()
