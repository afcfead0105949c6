"""`GET /metrics`: the counters an operator watches move with real traffic; METRICS_TOKEN and
METRICS_PUBLIC; JSON logs."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import httpx
import pytest

from backend.core.config import Settings
from backend.main import create_app
from tests.support.app import make_settings, running_app
from tests.support.prometheus import Samples, parse, value

TOKEN = "s3cret-metrics-token-for-the-test"
SCRAPER = {"Authorization": f"Bearer {TOKEN}"}


async def scrape(client: httpx.AsyncClient, **headers: str) -> Samples:
    r = await client.get("/metrics", headers=headers or SCRAPER)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return parse(r.text)


async def test_a_chat_turn_with_a_tool_call_moves_the_counters(
    database_url: str, data_dir: Path, alice: dict[str, str]
) -> None:
    settings = make_settings(database_url, data_dir, metrics_token=TOKEN)
    async with running_app(create_app(settings)) as client:
        before = await scrape(client)
        r = await client.post(
            "/api/chat", json={"message": "add a task to buy milk"}, headers=alice
        )
        assert r.status_code == 200 and r.json()["tool_calls"][0]["tool"] == "add_task"
        failed = await client.post(
            "/api/chat", json={"message": "complete task 999999"}, headers=alice
        )
        assert failed.json()["tool_calls"][0]["result"] == {"error": "Task 999999 not found"}
        task_id = r.json()["tool_calls"][0]["result"]["task_id"]
        assert (await client.get(f"/api/tasks/{task_id}", headers=alice)).status_code == 200
        after = await scrape(client)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    turns = "task_assistant_chat_turn_duration_seconds_count"
    assert moved(turns, outcome="ok") == 2
    assert moved("task_assistant_tool_calls_total", tool="add_task", outcome="ok") == 1
    assert moved("task_assistant_tool_calls_total", tool="complete_task", outcome="error") == 1
    chat = {"method": "POST", "route": "/api/chat", "status": "200"}
    assert moved("task_assistant_http_requests_total", **chat) == 2
    # Route templates, not raw paths: one series however many task ids there are.
    task = {"method": "GET", "route": "/api/tasks/{task_id}", "status": "200"}
    assert moved("task_assistant_http_requests_total", **task) == 1
    assert moved("task_assistant_model_call_duration_seconds_count", outcome="ok") >= 2
    assert moved("task_assistant_model_tokens_total", direction="input") > 0
    assert moved("task_assistant_model_tokens_total", direction="output") > 0
    assert value(after, "task_assistant_chat_turns_in_progress") == value(
        before, "task_assistant_chat_turns_in_progress"
    )
    assert value(after, "task_assistant_db_pool_size") == settings.database_pool_size
    assert value(after, "task_assistant_db_pool_connections_in_use") >= 0
    assert ("task_assistant_db_pool_waiting", frozenset()) in after


async def test_rate_limit_refusals_are_counted(
    database_url: str, data_dir: Path, alice: dict[str, str]
) -> None:
    settings = make_settings(database_url, data_dir, rate_limit_requests=1, metrics_token=TOKEN)
    async with running_app(create_app(settings)) as client:
        before = await scrape(client)
        for expected in (200, 429):
            r = await client.post("/api/chat", json={"message": "hi"}, headers=alice)
            assert r.status_code == expected
        after = await scrape(client)
    name = "task_assistant_rate_limit_refusals_total"
    assert value(after, name) - value(before, name) == 1
    refused = {"method": "POST", "route": "/api/chat", "status": "429"}
    assert value(after, "task_assistant_http_requests_total", **refused) >= 1


async def test_anonymous_refusals_are_counted_under_their_route(
    database_url: str, data_dir: Path
) -> None:
    """A body sent without a token is refused before routing runs; the 401 still counts under the
    route it was for, not as `unmatched`."""
    settings = make_settings(database_url, data_dir, metrics_token=TOKEN)
    async with running_app(create_app(settings)) as client:
        before = await scrape(client)
        r = await client.post("/api/tasks", json={"title": "x"})
        assert r.status_code == 401
        r = await client.post("/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
        assert r.status_code == 401
        after = await scrape(client)

    def moved(**labels: str) -> float:  # the counters are the process's: earlier tests count too
        name = "task_assistant_http_requests_total"
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved(method="POST", route="/api/tasks", status="401") == 1
    assert moved(method="POST", route="/mcp", status="401") == 1
    assert moved(method="POST", route="unmatched", status="401") == 0


async def test_metrics_token_guards_the_endpoint(database_url: str, data_dir: Path) -> None:
    settings = make_settings(database_url, data_dir, metrics_token=TOKEN)
    async with running_app(create_app(settings)) as client:
        anonymous = await client.get("/metrics")
        assert anonymous.status_code == 401
        assert anonymous.headers["www-authenticate"] == "Bearer"
        assert anonymous.json()["code"] == "unauthorized"
        wrong = await client.get("/metrics", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        assert wrong.headers["www-authenticate"] == 'Bearer error="invalid_token"'
        assert "task_assistant" not in wrong.text
        samples = await scrape(client, Authorization=f"Bearer {TOKEN}")
        assert ("task_assistant_db_pool_size", frozenset()) in samples


async def test_by_default_nobody_reads_the_metrics(settings: Settings) -> None:
    """No METRICS_TOKEN, no METRICS_PUBLIC (the defaults): every caller gets 401, none a byte
    of the process's figures."""
    assert settings.metrics_token is None and not settings.metrics_public
    async with running_app(create_app(settings)) as client:
        for headers in ({}, {"Authorization": "Bearer anything"}, {"Authorization": "Basic x"}):
            r = await client.get("/metrics", headers=headers)
            assert r.status_code == 401, headers
            assert r.json()["code"] == "unauthorized"
            assert "task_assistant" not in r.text and "python" not in r.text


async def test_public_metrics_are_rendered_at_most_once_a_second(
    database_url: str, data_dir: Path, alice: dict[str, str]
) -> None:
    settings = make_settings(database_url, data_dir, metrics_public=True, metrics_token=TOKEN)
    async with running_app(create_app(settings)) as client:
        first = await client.get("/metrics")
        assert first.status_code == 200
        assert (await client.get("/api/tasks", headers=alice)).status_code == 200
        # Anonymous: the same render within the second; the scraper's token: a fresh one.
        assert (await client.get("/metrics")).text == first.text
        fresh = parse((await client.get("/metrics", headers=SCRAPER)).text)
        tasks = {"method": "GET", "route": "/api/tasks", "status": "200"}
        counted = value(fresh, "task_assistant_http_requests_total", **tasks)
        assert counted > value(parse(first.text), "task_assistant_http_requests_total", **tasks)
        wrong = await client.get("/metrics", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401


async def test_json_log_lines_carry_the_request_id(
    database_url: str, data_dir: Path, alice: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    settings = make_settings(database_url, data_dir, log_format="JSON")
    try:
        async with running_app(create_app(settings)) as client:
            capsys.readouterr()
            r = await client.get("/api/tasks", headers={**alice, "X-Request-ID": "trace-42"})
            logging.getLogger("backend.test").warning('a %s with "quotes"', "message")
    finally:
        logging.getLogger().handlers.clear()  # the next app installs its own handler again
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert lines
    entries = [json.loads(line) for line in lines]  # every line is one JSON object
    access = [e for e in entries if e["logger"] == "backend.access"]
    assert r.headers["x-request-id"] == "trace-42"
    assert access and access[-1]["request_id"] == "trace-42"
    assert "GET /api/tasks 200" in access[-1]["message"]
    assert {"time", "level", "logger", "request_id", "message"} <= set(access[-1])
    assert entries[-1]["message"] == 'a message with "quotes"'
