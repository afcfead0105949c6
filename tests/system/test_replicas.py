"""Two app processes on one database: a conversation alternates between them and nothing breaks."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from backend.auth.devkeys import load_or_create_dev_key, mint_token
from bench.env import isolated_env
from tests.support import ROOT


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def replicas(database_url: str, tmp_path: Path) -> Iterator[tuple[list[str], Path]]:
    env = isolated_env()
    env.update(
        DATABASE_URL=database_url,
        DATA_DIR=str(tmp_path),
        RATE_LIMIT_REQUESTS="6",
        RATE_LIMIT_WINDOW_SECONDS="86400",
        LOG_LEVEL="WARNING",
    )
    procs, urls = [], []
    for _ in range(2):
        port = _free_port()
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "backend.main:app",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                ],
                env=env,
                cwd=ROOT,
            )
        )
        urls.append(f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 60
        for url in urls:
            while True:
                try:
                    if httpx.get(url + "/health/ready", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, "replica did not start"
                assert all(p.poll() is None for p in procs), "replica exited"
                time.sleep(0.1)
        yield urls, tmp_path
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(10)


def test_conversation_alternates_between_replicas(replicas: tuple[list[str], Path]) -> None:
    (a, b), data_dir = replicas
    token = mint_token(load_or_create_dev_key(data_dir), "replica-user")
    h = {"Authorization": f"Bearer {token}"}
    with httpx.Client(timeout=30) as http:
        r = http.post(f"{a}/api/chat", json={"message": "add a task to buy milk"}, headers=h)
        assert r.status_code == 200, r.text
        cid = r.json()["conversation_id"]
        r = http.post(
            f"{b}/api/chat", json={"message": "show my tasks", "conversation_id": cid}, headers=h
        )
        assert r.status_code == 200 and "milk" in r.json()["response"].lower()
        r = http.post(
            f"{a}/api/chat",
            json={"message": "mark the milk task as done", "conversation_id": cid},
            headers=h,
        )
        assert r.status_code == 200
        assert [c["tool"] for c in r.json()["tool_calls"]][-1] == "complete_task"
        detail = http.get(f"{b}/api/conversations/{cid}", headers=h).json()
        assert [m["role"] for m in detail["messages"]] == ["user", "assistant"] * 3
        assert (
            http.get(f"{b}/api/tasks?status=completed", headers=h).json()["tasks"][0]["title"]
            == "Buy milk"
        )

        # idempotency holds across replicas: the retry on B returns A's answer
        key = {"Idempotency-Key": "replica-key"}
        first = http.post(
            f"{a}/api/chat", json={"message": "add a task to call mom"}, headers={**h, **key}
        )
        again = http.post(
            f"{b}/api/chat", json={"message": "add a task to call mom"}, headers={**h, **key}
        )
        assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
        titles = [t["title"] for t in http.get(f"{a}/api/tasks", headers=h).json()["tasks"]]
        assert titles.count("Call mom") == 1

        # the rate limit (6 per window) is shared: 5 requests so far, one more passes on B, then A refuses
        assert http.post(f"{b}/api/chat", json={"message": "hi"}, headers=h).status_code == 200
        r = http.post(f"{a}/api/chat", json={"message": "hi"}, headers=h)
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
