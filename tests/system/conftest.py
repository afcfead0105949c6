"""The system tier: tests that start processes or browsers (servers, SIGTERM, replicas, faults
through a TCP proxy, Chromium, the bench). All marked `slow`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.journal import journal_settings
from tests.support.proxy import DatabaseProxy
from tests.support.stub_llm import StubLLM


@pytest.fixture(autouse=True)
def _isolated(clean_database: None) -> None:
    """Every test starts on empty tables."""


HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.slow)


@pytest.fixture
async def behind_proxy(
    database_url: str, data_dir: Path, stub: StubLLM
) -> AsyncIterator[tuple[DatabaseProxy, Any]]:
    """Settings whose database is reached through a TCP proxy the test can cut."""
    proxy = DatabaseProxy(database_url)
    await proxy.start()
    try:
        yield (
            proxy,
            journal_settings(
                proxy.url, data_dir, stub, chat_timeout_seconds=5, database_connect_timeout=1
            ),
        )
    finally:
        await proxy.stop()
