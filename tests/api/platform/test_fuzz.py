"""Fuzz the whole HTTP API from its OpenAPI schema (schemathesis): no 500s, no schema violations."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from backend.auth.devkeys import load_or_create_dev_key, mint_token
from backend.core.config import Settings
from backend.main import create_app
from tests.support.app import listening_socket, make_settings

# One worker runs the whole module: one live server, not one per xdist worker.
pytestmark = pytest.mark.xdist_group("fuzz")

schema = schemathesis.openapi.from_dict(
    create_app(Settings(_env_file=None, database_url="postgresql://unused/x")).openapi()  # type: ignore[call-arg]
)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def live_server(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path]]:
    data_dir = tmp_path_factory.mktemp("fuzz")
    app = create_app(
        make_settings(database_url, data_dir, rate_limit_requests=0, chat_timeout_seconds=10)
    )
    sock = listening_socket()
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("fuzz server did not start")
        threading.Event().wait(0.02)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}", data_dir
    server.should_exit = True
    thread.join(10)


@schema.parametrize()
@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_api_never_fails(case: schemathesis.Case, live_server: tuple[str, Path]) -> None:
    base_url, data_dir = live_server
    token = mint_token(load_or_create_dev_key(data_dir), "fuzzer")
    headers = {"Authorization": f"Bearer {token}"}
    response = case.call(base_url=base_url, headers=headers, timeout=15)
    case.validate_response(response, checks=CHECKS)
