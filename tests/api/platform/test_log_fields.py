"""Log fields nobody can forge: every user-controlled value of a `name=value` field is quoted
(and escaped) when it is not plain, and a token's `sub` cannot start or end with a space.
The failed-turn line, with the provider's own words in it, is checked in test_provider_faults."""

from __future__ import annotations

import logging
import shlex
from collections.abc import Callable

import httpx
import pytest

from backend.core.logging import EscapingFormatter, log_value

FORGING_SUB = 'evil" user=root'


def fields(line: str) -> list[tuple[str, str]]:
    """The `name=value` fields of a log line, values unquoted as a shell would (JSON's `\\"`
    inside double quotes reads the same)."""
    return [
        (name, value)
        for word in shlex.split(line, posix=True)
        for name, sep, value in [word.partition("=")]
        if sep
    ]


def lines(caplog: pytest.LogCaptureFixture, logger: str) -> list[str]:
    formatter = EscapingFormatter("%(message)s")
    return [formatter.format(r) for r in caplog.records if r.name == logger]


@pytest.mark.parametrize(
    ("value", "logged"),
    [
        ("alice", "alice"),
        ("user@example.com", "user@example.com"),
        ("/api/tasks/3", "/api/tasks/3"),
        ("a b", '"a b"'),
        (FORGING_SUB, '"evil\\" user=root"'),
        ("", '""'),
        ("ünï", '"ünï"'),
    ],
)
def test_log_value_quotes_whatever_is_not_plain(value: str, logged: str) -> None:
    assert log_value(value) == logged
    assert fields(f"user={log_value(value)} next=1") == [("user", value), ("next", "1")]


async def test_a_forging_sub_stays_one_field_in_the_turn_and_access_logs(
    client: httpx.AsyncClient,
    auth_for: Callable[[str], dict[str, str]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    r = await client.post(
        "/api/chat", json={"message": "add a task to buy milk"}, headers=auth_for(FORGING_SUB)
    )
    assert r.status_code == 200, r.text
    (turn,) = lines(caplog, "backend.chat.turn")
    assert turn.startswith(f"chat turn user={log_value(FORGING_SUB)} conversation=")
    parsed = fields(turn)
    assert [v for k, v in parsed if k == "user"] == [FORGING_SUB]
    assert dict(parsed)["tools"] == "add_task"
    access = [line for line in lines(caplog, "backend.access") if line.startswith("POST /api/chat")]
    assert [v for k, v in fields(access[0]) if k == "user"] == [FORGING_SUB]


@pytest.mark.parametrize("sub", [" alice", "alice ", "  ", "alice\t", "\u00a0alice"])
async def test_a_sub_with_leading_or_trailing_whitespace_is_401(
    client: httpx.AsyncClient, token_for: Callable[..., str], sub: str
) -> None:
    r = await client.get("/api/tasks", headers={"Authorization": f"Bearer {token_for(sub)}"})
    assert r.status_code == 401, (sub, r.text)
    assert r.json() == {"detail": "Invalid token", "code": "unauthorized"}


async def test_inner_spaces_stay_allowed(
    client: httpx.AsyncClient, token_for: Callable[..., str]
) -> None:
    r = await client.get("/api/tasks", headers={"Authorization": f"Bearer {token_for('a b')}"})
    assert r.status_code == 200
