"""Fixtures of the chat tests: both ways a turn is answered, and the app on the stub model."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest

from backend.main import create_app
from tests.support.app import running_app
from tests.support.fakes import llm_settings
from tests.support.stub_llm import StubLLM

StubApp = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture(params=[False, True], ids=["plain", "streamed"])
def streamed(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


@pytest.fixture
def stub_app(database_url: str, data_dir: Path, stub: StubLLM) -> StubApp:
    """The app on the stub model over real HTTP, with these settings on top of `llm_settings`."""

    def open_app(**extra: Any) -> AbstractAsyncContextManager[httpx.AsyncClient]:
        return running_app(create_app(llm_settings(database_url, data_dir, stub, **extra)))

    return open_app
