"""The api tier: the app in process on a real PostgreSQL, one folder per front door. Every test
starts on empty tables; the fixtures here are the ones several front doors use."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from backend.core.config import Settings
from backend.main import create_app
from tests.support.app import make_settings, running_app, serving


@pytest.fixture(autouse=True)
def _isolated(clean_database: None) -> None:
    """Every test starts on empty tables."""


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine of the test database, for reading what the app stored."""
    engine = create_async_engine(database_url)
    yield engine
    await engine.dispose()


@pytest.fixture
async def base_url(settings: Settings) -> AsyncIterator[str]:
    """The app served by uvicorn on a free port (real HTTP)."""
    async with serving(create_app(settings)) as url:
        yield url


@pytest.fixture
async def small(database_url: str, data_dir: Path) -> AsyncIterator[httpx.AsyncClient]:
    """The app with small limits: 5 tasks per user, 4,000-character tool output, 10 KB pages."""
    settings = make_settings(
        database_url,
        data_dir,
        max_tasks_per_user=5,
        max_tool_output_chars=4000,
        max_page_bytes=10_000,
    )
    async with running_app(create_app(settings)) as client:
        yield client
