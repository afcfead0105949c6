"""Timezone-aware UTC time, the only kind the service uses, and the type of an injected clock."""

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], float]
"""Seconds (since the epoch, or a monotonic origin): what tests inject instead of sleeping."""


def utcnow() -> datetime:
    return datetime.now(UTC)
