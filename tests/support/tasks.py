"""Task requests the tests share: create one over REST, and the shape of a 422."""

from __future__ import annotations

import httpx

HUGE = "9" * 5000  # past Python's 4,300-digit int/str conversion limit


async def create(client: httpx.AsyncClient, headers: dict[str, str], title: str) -> httpx.Response:
    return await client.post("/api/tasks", json={"title": title}, headers=headers)


def assert_invalid(r: httpx.Response, field: str | None = None) -> None:
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["code"] == "invalid_input" and body["detail"], body
    if field is not None:
        assert field in [e["field"] for e in body["errors"]], body
