"""The task REST API: CRUD, validation, isolation between users, error shapes."""

from __future__ import annotations

import httpx
import pytest


async def test_crud_round_trip(client: httpx.AsyncClient, alice: dict[str, str]) -> None:
    r = await client.post(
        "/api/tasks", json={"title": "  Buy milk ", "description": "2 litres"}, headers=alice
    )
    assert r.status_code == 201
    task = r.json()
    assert (
        task["title"] == "Buy milk" and task["description"] == "2 litres" and not task["completed"]
    )

    r = await client.get(f"/api/tasks/{task['id']}", headers=alice)
    assert r.status_code == 200 and r.json()["title"] == "Buy milk"

    r = await client.patch(f"/api/tasks/{task['id']}", json={"completed": True}, headers=alice)
    assert r.status_code == 200 and r.json()["completed"] is True
    assert r.json()["updated_at"] > task["updated_at"]

    r = await client.patch(
        f"/api/tasks/{task['id']}", json={"description": None, "title": "Oat milk"}, headers=alice
    )
    assert r.json()["description"] is None and r.json()["title"] == "Oat milk"

    r = await client.delete(f"/api/tasks/{task['id']}", headers=alice)
    assert r.status_code == 204
    r = await client.get(f"/api/tasks/{task['id']}", headers=alice)
    assert r.status_code == 404
    assert r.json() == {"detail": f"Task {task['id']} not found", "code": "task_not_found"}


async def test_status_filter(client: httpx.AsyncClient, alice: dict[str, str]) -> None:
    ids = []
    for title in ("one", "two", "three"):
        ids.append(
            (await client.post("/api/tasks", json={"title": title}, headers=alice)).json()["id"]
        )
    await client.patch(f"/api/tasks/{ids[1]}", json={"completed": True}, headers=alice)

    async def titles(status: str) -> list[str]:
        r = await client.get("/api/tasks", params={"status": status}, headers=alice)
        assert r.status_code == 200
        return [t["title"] for t in r.json()["tasks"]]

    assert await titles("all") == ["one", "two", "three"]
    assert await titles("pending") == ["one", "three"]
    assert await titles("completed") == ["two"]
    r = await client.get("/api/tasks", params={"status": "done"}, headers=alice)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "status"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"title": ""}, "title"),
        ({"title": "   "}, "title"),
        ({"title": "x" * 201}, "title"),
        ({"title": "ok", "description": "d" * 2001}, "description"),
        ({"title": "nul\x00byte"}, "title"),
        ({}, "title"),
        ({"title": 5}, "title"),
        ({"title": "ok", "user_id": "bob"}, "user_id"),
    ],
)
async def test_create_validation(
    client: httpx.AsyncClient, alice: dict[str, str], body: dict[str, object], field: str
) -> None:
    r = await client.post("/api/tasks", json=body, headers=alice)
    assert r.status_code == 422
    assert r.json()["code"] == "invalid_input"
    assert [e["field"] for e in r.json()["errors"]] == [field]


async def test_limits_are_inclusive(client: httpx.AsyncClient, alice: dict[str, str]) -> None:
    r = await client.post(
        "/api/tasks", json={"title": "x" * 200, "description": "d" * 2000}, headers=alice
    )
    assert r.status_code == 201


async def test_update_validation(client: httpx.AsyncClient, alice: dict[str, str]) -> None:
    task = (await client.post("/api/tasks", json={"title": "a"}, headers=alice)).json()
    for body, field in [
        ({"title": ""}, "title"),
        ({"completed": None}, "completed"),
        ({"title": None}, "title"),
    ]:
        r = await client.patch(f"/api/tasks/{task['id']}", json=body, headers=alice)
        assert r.status_code == 422, body
        assert r.json()["errors"][0]["field"] == field
    r = await client.patch(
        f"/api/tasks/{task['id']}",
        content=b"{not json",
        headers={**alice, "content-type": "application/json"},
    )
    assert r.status_code == 422


async def test_users_are_isolated(
    client: httpx.AsyncClient, alice: dict[str, str], bob: dict[str, str]
) -> None:
    task = (await client.post("/api/tasks", json={"title": "alice's"}, headers=alice)).json()
    url = f"/api/tasks/{task['id']}"
    assert (await client.get(url, headers=bob)).status_code == 404
    assert (await client.patch(url, json={"completed": True}, headers=bob)).status_code == 404
    assert (await client.delete(url, headers=bob)).status_code == 404
    assert (await client.get("/api/tasks", headers=bob)).json() == {
        "tasks": [],
        "next_cursor": None,
    }
    # and alice's task is untouched
    r = await client.get(url, headers=alice)
    assert r.status_code == 200 and r.json()["completed"] is False


@pytest.mark.parametrize("task_id", ["0", "-1", "99999999999999999999999", "abc"])
async def test_odd_ids(client: httpx.AsyncClient, alice: dict[str, str], task_id: str) -> None:
    r = await client.get(f"/api/tasks/{task_id}", headers=alice)
    assert r.status_code in (404, 422)
    assert "detail" in r.json()


async def test_routing_errors_share_the_shape(
    client: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    r = await client.get("/api/nothing-here", headers=alice)
    assert r.status_code == 404 and r.json()["code"] == "not_found"
    r = await client.put("/api/tasks", headers=alice)
    assert r.status_code == 405 and r.json()["code"] == "method_not_allowed"


async def test_oversized_body_is_refused(client: httpx.AsyncClient, alice: dict[str, str]) -> None:
    r = await client.post(
        "/api/tasks",
        content=b'{"title": "' + b"x" * 1_100_000 + b'"}',
        headers={**alice, "content-type": "application/json"},
    )
    assert r.status_code == 413 and r.json()["code"] == "payload_too_large"


async def test_health(client: httpx.AsyncClient) -> None:
    assert (await client.get("/health")).json() == {"status": "ok"}
    r = await client.get("/health/ready")
    assert r.status_code == 200 and r.json()["status"] == "ok"


async def test_openapi_documents_auth_and_errors(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    assert "HTTPBearer" in schema["components"]["securitySchemes"]
    op = schema["paths"]["/api/tasks/{task_id}"]["get"]
    assert {"401", "404", "422"} <= set(op["responses"])
    assert op["responses"]["404"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/ErrorBody"
    )
