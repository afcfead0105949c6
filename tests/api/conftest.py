"""The api tier: the app in process on a real PostgreSQL, one folder per front door."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _isolated(clean_database: None) -> None:
    """Every test starts on empty tables."""
