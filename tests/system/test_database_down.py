"""With the database unreachable the API answers 503 quickly, and readiness says why."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from backend.main import create_app
from tests.support.app import free_port, make_settings, running_app


async def test_database_down(data_dir: Path, alice: dict[str, str]) -> None:
    url = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nothing"
    app = create_app(make_settings(url, data_dir, database_connect_timeout=2))
    async with running_app(app) as client:
        started = time.monotonic()
        r = await client.get("/health/ready")
        assert r.status_code == 503
        assert r.json()["status"] == "unavailable" and "database" in r.json()["reason"]
        assert (await client.get("/health")).status_code == 200

        r = await client.get("/api/tasks", headers=alice)
        assert r.status_code == 503
        assert r.json() == {
            "detail": "Database temporarily unavailable",
            "code": "database_unavailable",
        }
        r = await client.post("/api/tasks", json={"title": "x"}, headers=alice)
        assert r.status_code == 503
        assert time.monotonic() - started < 10
        assert isinstance(r, httpx.Response)


async def test_outage_and_recovery_without_restart(
    database_url: str, data_dir: Path, alice: dict[str, str]
) -> None:
    from tests.support.proxy import DatabaseProxy

    proxy = DatabaseProxy(database_url)
    await proxy.start()
    app = create_app(make_settings(proxy.url, data_dir, database_connect_timeout=2))
    try:
        async with running_app(app) as client:
            assert (
                await client.post("/api/tasks", json={"title": "before"}, headers=alice)
            ).status_code == 201
            await proxy.stop()
            started = time.monotonic()
            for _ in range(3):
                r = await client.get("/api/tasks", headers=alice)
                assert r.status_code == 503, r.text
            r = await client.get("/health/ready")
            assert r.status_code == 503 and r.json()["status"] == "unavailable"
            assert time.monotonic() - started < 15

            await proxy.start()  # the database is back
            statuses = [
                (await client.get("/api/tasks", headers=alice)).status_code for _ in range(3)
            ]
            assert statuses[-1] == 200 and statuses.count(503) <= 1
            assert (await client.get("/health/ready")).status_code == 200
            r = await client.get("/api/tasks", headers=alice)
            assert [t["title"] for t in r.json()["tasks"]] == ["before"]
    finally:
        await proxy.stop()
