"""How much load each workload puts on the servers: a full run's, and `--smoke`'s."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Sizes:
    w2_users: int = 20
    w2_turns: int = 10
    """Per user, in one conversation (thread); also W5's and W6's."""
    rounds: int = 5
    """W2, W5 and W6 take turns in this many rounds (w2_turns / rounds turns per user each)."""
    w3_users: int = 100
    w3_turns: int = 2
    w3_latency_ms: float = 500
    w4_long: int = 400
    w4_full: int = 120
    """Above HISTORY_MAX_MESSAGES (100): the window is already full."""
    w4_short: int = 10
    w4_samples: int = 40
    """Turns per history length, in four interleaved batches, each in a freshly seeded conversation."""
    w7_tasks: int = 1000
    """The noisy user's tasks: MAX_TASKS_PER_USER (its default), every one of maximum size."""
    w7_turners: int = 10
    w7_streams: int = 15
    w7_quiet_gets: int = 100
    w7_quiet_turns: int = 8
    """Per phase; both phases together stay under the default 20 turns per minute."""
    w7_latency_ms: float = 250
    warmup: int = 60


SMOKE = Sizes(
    w2_users=3,
    w2_turns=2,
    rounds=2,
    w3_users=4,
    w3_turns=1,
    w3_latency_ms=50,
    w4_long=40,
    w4_full=20,
    w4_short=10,
    w4_samples=4,
    w7_tasks=60,
    w7_turners=2,
    w7_streams=2,
    w7_quiet_gets=5,
    w7_quiet_turns=2,
    w7_latency_ms=20,
    warmup=2,
)
