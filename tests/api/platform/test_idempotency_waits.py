"""Honest idempotency waits: replays say so, a 409 says how long, a failed release heals."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from agents.testing import ScriptedModel, assistant_message
from fastapi import FastAPI
from sqlalchemy import text

from backend.chat.schemas import ChatRequest
from backend.main import create_app
from backend.reliability.idempotency import (
    IdempotencyClaim,
    IdempotencyStore,
    KeyInFlight,
    request_hash,
)
from tests.support.app import LIVE_STATES, free_port, make_settings, running_app

LOCK_SECONDS = 2
"""The turn (and Idempotency-Key) claim in these tests: short, so lapses come quickly."""


def _fingerprint(**body: Any) -> bytes:
    """The hash `POST /api/chat` stores for this body."""
    return request_hash("POST", "/api/chat", ChatRequest(**body).model_dump(mode="json"))


def _store(app: FastAPI) -> IdempotencyStore:
    return LIVE_STATES[app].idempotency


async def _claim(app: FastAPI, user: str, key: str, **body: Any) -> IdempotencyClaim:
    """Claim `key` as a request that then died unsettled (or could not settle) leaves it."""
    claim = await _store(app).begin(user, key, _fingerprint(**body), turn_id=uuid.uuid4())
    assert isinstance(claim, IdempotencyClaim)
    return claim


async def _remaining(app: FastAPI, user: str, key: str) -> float | None:
    """Seconds until the stored claim lapses, by the database's clock (None: no claim)."""
    async with LIVE_STATES[app].autocommit_engine.connect() as conn:
        left = (
            await conn.execute(
                text(
                    "SELECT extract(epoch FROM locked_until - now()) FROM idempotency_keys "
                    "WHERE user_id = :u AND key = :k"
                ),
                {"u": user, "k": key},
            )
        ).scalar_one_or_none()
    return None if left is None else float(left)


def _app(database_url: str, data_dir: Path, replies: int, **settings: Any) -> FastAPI:
    model = ScriptedModel([[assistant_message(f"reply {n}")] for n in range(replies)])
    return create_app(make_settings(database_url, data_dir, **settings), model=model)


async def test_a_streamed_replay_says_it_is_one(
    database_url: str, data_dir: Path, alice: dict[str, str]
) -> None:
    async with running_app(_app(database_url, data_dir, 1)) as client:
        headers = {**alice, "Idempotency-Key": "stream-1"}
        body = {"message": "hi", "stream": True}
        first = await client.post("/api/chat", json=body, headers=headers)
        assert first.status_code == 200 and "idempotent-replayed" not in first.headers
        again = await client.post("/api/chat", json=body, headers=headers)
        assert again.status_code == 200
        assert again.headers["idempotent-replayed"] == "true"
        assert again.headers["content-type"].startswith("text/event-stream")
        assert '"type":"done"' in again.text and "reply 0" in again.text


async def test_in_use_answers_when_the_claim_lapses_then_the_retry_runs(
    database_url: str, data_dir: Path, alice: dict[str, str]
) -> None:
    """A key left claimed by a request that could not settle it: the 409's Retry-After is the
    time left on the stored claim (not a constant), and once it lapses the retry runs."""
    app = _app(database_url, data_dir, 1, conversation_lock_seconds=LOCK_SECONDS)
    async with running_app(app) as client:
        await _claim(app, "alice", "stuck", message="hi", stream=True)
        headers = {**alice, "Idempotency-Key": "stuck"}
        started = time.monotonic()
        r = await client.post("/api/chat", json={"message": "hi", "stream": True}, headers=headers)
        assert r.status_code == 409 and r.json()["code"] == "idempotency_key_in_use"
        retry_after = int(r.headers["retry-after"])
        left = await _remaining(app, "alice", "stuck")
        assert 0 < retry_after <= LOCK_SECONDS
        assert (
            left is not None and retry_after - 1 <= left <= retry_after
        )  # the stored expiry, rounded up
        assert f"retry in {retry_after} s" in r.json()["detail"]

        while r.status_code == 409:  # a client that honours Retry-After
            assert 0 < int(r.headers["retry-after"]) <= retry_after
            await asyncio.sleep(0.2)
            r = await client.post(
                "/api/chat", json={"message": "hi", "stream": True}, headers=headers
            )
        assert r.status_code == 200 and "reply 0" in r.text  # the turn ran
        assert "idempotent-replayed" not in r.headers
        assert time.monotonic() - started <= retry_after + 1


async def test_in_use_retry_after_is_not_capped(
    database_url: str, data_dir: Path, alice: dict[str, str]
) -> None:
    """With the default claim (CHAT_TIMEOUT_SECONDS + 5), Retry-After is the real wait, not 5."""
    app = _app(database_url, data_dir, 0)
    async with running_app(app) as client:
        await _claim(app, "alice", "long", message="hi", stream=True)
        r = await client.post(
            "/api/chat",
            json={"message": "hi", "stream": True},
            headers={**alice, "Idempotency-Key": "long"},
        )
        assert r.status_code == 409
        left = await _remaining(app, "alice", "long")
        assert left is not None and left > 5
        assert int(r.headers["retry-after"]) in (int(left), int(left) + 1)


async def test_a_release_that_failed_is_retried_when_the_database_is_back(
    database_url: str, data_dir: Path, alice: dict[str, str]
) -> None:
    """The database vanished as a request gave up: its key is released by the next request
    this process sees, instead of answering 409 (or waiting) until the claim lapses."""
    from sqlalchemy.ext.asyncio import create_async_engine

    async with running_app(app := _app(database_url, data_dir, 1)) as client:
        claim = await _claim(app, "alice", "unsettled", message="hi")
        store = _store(app)
        engine, store.engine = (
            store.engine,
            create_async_engine(
                f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/gone",
                connect_args={"connect_timeout": 1},
            ),
        )
        with pytest.raises(Exception):  # noqa: B017 - whatever the driver raises
            await claim.release()
        await store.engine.dispose()
        store.engine = engine  # the database is back
        left = await _remaining(app, "alice", "unsettled")
        assert left is not None and left > 20  # still claimed in the table

        started = time.monotonic()
        r = await client.post(
            "/api/chat", json={"message": "hi"}, headers={**alice, "Idempotency-Key": "unsettled"}
        )
        assert r.status_code == 200 and r.json()["response"] == "reply 0"
        assert time.monotonic() - started < 5  # not the 30 s of the claim


async def test_a_late_release_leaves_a_newer_claim_alone(
    database_url: str, data_dir: Path, alice: dict[str, str]
) -> None:
    app = _app(database_url, data_dir, 0, conversation_lock_seconds=1)
    async with running_app(app):
        old = await _claim(app, "alice", "k", message="hi")
        deadline = time.monotonic() + 5
        while True:  # once the old claim lapses (its turn left nothing), a repeat takes over
            try:
                new = await _store(app).begin(
                    "alice", "k", _fingerprint(message="hi"), turn_id=uuid.uuid4(), wait=False
                )
            except KeyInFlight:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)
                continue
            assert isinstance(new, IdempotencyClaim)
            break
        await old.release()  # the first request's release arrives late
        left = await _remaining(app, "alice", "k")
        assert left is not None and left > 0  # the new claim stands
        await new.release()
        assert await _remaining(app, "alice", "k") is None  # its own release works
