"""Bounded by design: every limit on what one user can grow, and a 4xx where a 500 used to be."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.support.fakes import MCP_HEADERS
from tests.support.tasks import HUGE


async def mcp_post(base_url: str, token: str, name: str, raw_arguments: str) -> httpx.Response:
    """A tools/call with arguments written as raw JSON (Python cannot dump a 5,000-digit int)."""
    body = (
        '{"jsonrpc": "2.0", "id": 1, "method": "tools/call", '
        f'"params": {{"name": "{name}", "arguments": {raw_arguments}}}}}'
    )
    async with httpx.AsyncClient(base_url=base_url, headers=MCP_HEADERS) as http:
        return await http.post(
            "/mcp",
            content=body,
            headers={"MCP-Protocol-Version": "2025-11-25", "Authorization": f"Bearer {token}"},
        )


async def mcp_call(base_url: str, token: str, name: str, raw_arguments: str) -> dict[str, Any]:
    r = await mcp_post(base_url, token, name, raw_arguments)
    assert r.status_code == 200, r.text
    result: dict[str, Any] = r.json()["result"]
    return result


async def test_mcp_json_number_too_long_to_parse_is_a_parse_error(
    base_url: str, token_for: Callable[..., str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    r = await mcp_post(base_url, token_for("alice"), "complete_task", f'{{"task_id": {HUGE}}}')
    assert r.status_code == 400 and r.json()["error"]["code"] == -32700
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


@pytest.mark.parametrize(
    ("raw_id", "message_"),
    [
        ("1" + "0" * 100, "No task has that id"),
        (f'"{HUGE}"', "No task has that id"),
        ("-1" + "0" * 100, "No task has that id"),
        (str(2**63), "No task has that id"),
        ("1e300", "No task has that id"),
        ('"٣"', "must be an integer task id"),
        ('"²"', "must be an integer task id"),
        ('"①"', "must be an integer task id"),
        ("1e400", "must be an integer task id"),
        ('"3.5"', "must be an integer task id"),
    ],
)
async def test_mcp_ids_no_task_can_have_are_tool_errors_without_a_traceback(
    base_url: str,
    token_for: Callable[..., str],
    caplog: pytest.LogCaptureFixture,
    raw_id: str,
    message_: str,
) -> None:
    caplog.set_level(logging.WARNING)
    for name, extra in (
        ("complete_task", ""),
        ("delete_task", ""),
        ("update_task", ', "title": "x"'),
    ):
        result = await mcp_call(
            base_url, token_for("alice"), name, f'{{"task_id": {raw_id}{extra}}}'
        )
        assert result["isError"] is True, result
        assert message_ in result["content"][0]["text"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


async def test_mcp_list_tasks_is_capped_too(
    base_url: str, token_for: Callable[..., str], alice: dict[str, str]
) -> None:
    async with httpx.AsyncClient(base_url=base_url, headers=alice) as rest:
        for n in range(52):
            await rest.post("/api/tasks", json={"title": f"task {n}"})
    result = await mcp_call(base_url, token_for("alice"), "list_tasks", "{}")
    listed = result["structuredContent"]
    assert len(listed["tasks"]) == 50 and listed["count"] == 52 and "hint" in listed
    pending = await mcp_call(base_url, token_for("alice"), "list_tasks", '{"search": "task 5"}')
    assert [t["title"] for t in pending["structuredContent"]["tasks"]] == [
        "task 5",
        "task 50",
        "task 51",
    ]


# --- token counting off the event loop ---------------------------------------------------------
