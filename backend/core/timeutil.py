"""Timezone-aware UTC time, the only kind the service uses."""

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)
