"""The system tier: tests that start processes or browsers (servers, SIGTERM, replicas, faults
through a TCP proxy, Chromium, the bench). All marked `slow`."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _isolated(clean_database: None) -> None:
    """Every test starts on empty tables."""


HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.slow)
