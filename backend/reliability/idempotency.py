"""Idempotency-Key: a retried request returns the first answer instead of running again.

Per user and key: the first request claims the key (one INSERT), runs, and stores its 2xx
answer; a repeat with the same body gets that answer back (`Idempotent-Replayed: true`); a
concurrent repeat waits for the first to finish (or, with `wait=False`, answers 409 at once);
a repeat with a different body answers 422. Requests that failed without effect release the
key so the client can retry. Keys expire after IDEMPOTENCY_TTL_SECONDS.

A chat turn's key also names the turn (`turn_id`). When a key's request died without settling
it (a crash, the database gone at the end), a repeat after the claim lapses asks `recorded`
what that turn left in its conversation: if its tools committed anything, that record is the
answer (the tools never run twice); only a turn that left nothing is run again.

Waits are honest. A 409 carries `Retry-After` = the seconds until the first request's claim
lapses, read from its stored expiry. A release that failed (the database gone just when a
request gave up) is remembered and retried by this process's next `begin`, as soon as the
database answers again, so a key whose request never ran is not held until its claim lapses. A
claim is released only by its own request (its `locked_until` is its identity), never after
another request has taken the key over.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import DateTime, Uuid, bindparam, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from backend.core.errors import Conflict, InvalidInput

HEADER = "Idempotency-Key"
_VALID_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
POLL_SECONDS = 0.1
MAX_DEFERRED_RELEASES = 10_000
"""Failed releases remembered for a retry; beyond this many, the rest lapse on their own."""

_CLAIM = text(
    """
    INSERT INTO idempotency_keys AS k (user_id, key, request_hash, locked_until, expires_at, turn_id)
    VALUES (:uid, :key, :hash, now() + :lock, now() + :ttl, :turn)
    ON CONFLICT (user_id, key) DO UPDATE
       SET request_hash = EXCLUDED.request_hash, status_code = NULL, response = NULL,
           locked_until = EXCLUDED.locked_until, expires_at = EXCLUDED.expires_at,
           turn_id = EXCLUDED.turn_id
     WHERE k.expires_at < now()
        OR (k.status_code IS NULL AND k.locked_until < now() AND k.turn_id IS NOT DISTINCT FROM :lapsed)
    RETURNING locked_until
    """
).bindparams(bindparam("turn", type_=Uuid), bindparam("lapsed", type_=Uuid))
_READ = text(
    """
    SELECT request_hash, status_code, response, turn_id, locked_until < now() AS lapsed,
           CEIL(EXTRACT(EPOCH FROM locked_until - now())) AS remaining
      FROM idempotency_keys WHERE user_id = :uid AND key = :key
    """
)
_COMPLETE = text(
    """
    UPDATE idempotency_keys SET status_code = :status, response = :response
     WHERE user_id = :uid AND key = :key AND request_hash = :hash
    """
).bindparams(bindparam("response", type_=JSONB))
_RELEASE = text(
    """
    DELETE FROM idempotency_keys
     WHERE user_id = :uid AND key = :key AND request_hash = :hash AND status_code IS NULL
       AND locked_until = coalesce(:until, locked_until)
    """
).bindparams(bindparam("until", type_=DateTime(timezone=True)))
_PURGE = text("DELETE FROM idempotency_keys WHERE expires_at < now() - interval '1 hour'")


class KeyInFlight(Conflict):
    code = "idempotency_key_in_use"
    detail = "The first request with this Idempotency-Key has not finished; retry shortly"

    def __init__(self, retry_after: int = 1) -> None:
        """`retry_after`: seconds until the first request's claim lapses."""
        retry_after = max(1, retry_after)
        super().__init__(
            "The first request with this Idempotency-Key has not finished; "
            f"retry in {retry_after} s",
            retry_after=retry_after,
        )


Recorded = Callable[[str, uuid.UUID], Awaitable[Any | None]]
"""(user id, turn id) -> the answer a lapsed turn left behind, or None if it left nothing."""


@dataclass(frozen=True, slots=True)
class Replay:
    status_code: int
    body: Any


@dataclass(slots=True)
class IdempotencyClaim:
    """A claimed key: call `complete` with the answer, or `release` on failure."""

    store: IdempotencyStore
    user_id: str
    key: str
    request_hash: bytes
    turn_id: uuid.UUID | None = None
    locked_until: datetime | None = None
    """The claim's stored expiry: which claim this is (a takeover stores a new one)."""
    lapses_at: float = 0.0
    """When the claim lapses, on this process's event-loop clock."""

    async def complete(self, status_code: int, body: Any) -> None:
        async with self.store.engine.connect() as conn:
            await conn.execute(
                _COMPLETE,
                {
                    "uid": self.user_id,
                    "key": self.key,
                    "hash": self.request_hash,
                    "status": status_code,
                    "response": body,
                },
            )

    async def release(self) -> None:
        """Let a repeat run afresh; if the database is gone, the store retries it later."""
        params = {
            "uid": self.user_id,
            "key": self.key,
            "hash": self.request_hash,
            "until": self.locked_until,
        }
        try:
            async with self.store.engine.connect() as conn:
                await conn.execute(_RELEASE, params)
        except Exception:
            if self.locked_until is not None:
                self.store.defer_release(params, self.lapses_at)
            raise


def request_hash(method: str, path: str, body: Any) -> bytes:
    return hashlib.sha256(orjson.dumps([method, path, body], option=orjson.OPT_SORT_KEYS)).digest()


class IdempotencyStore:
    def __init__(
        self,
        autocommit_engine: AsyncEngine,
        *,
        ttl_seconds: int,
        lock_seconds: float,
        recorded: Recorded | None = None,
    ) -> None:
        self.engine = autocommit_engine
        self.ttl = timedelta(seconds=ttl_seconds)
        self.lock_seconds = lock_seconds
        self.recorded = recorded
        self._deferred: dict[tuple[str, str], tuple[dict[str, Any], float]] = {}
        """Releases that failed: (user, key) -> (the release's parameters, when it lapses)."""

    def defer_release(self, params: dict[str, Any], lapses_at: float) -> None:
        """Retry a failed release at the next `begin` (until the claim lapses on its own)."""
        if len(self._deferred) < MAX_DEFERRED_RELEASES:
            self._deferred[(params["uid"], params["key"])] = (params, lapses_at)

    async def _release_deferred(self, conn: AsyncConnection) -> None:
        """Run the failed releases on `conn`; on failure keep them (the claim fails too)."""
        now = asyncio.get_running_loop().time()
        pending = [(p, t) for p, t in self._deferred.values() if t > now]
        self._deferred.clear()
        for done, (params, _) in enumerate(pending):
            try:
                await conn.execute(_RELEASE, params)
            except BaseException:
                for p, t in pending[done:]:
                    self._deferred.setdefault((p["uid"], p["key"]), (p, t))
                raise

    async def begin(
        self,
        user_id: str,
        key: str,
        fingerprint: bytes,
        *,
        turn_id: uuid.UUID | None = None,
        wait: bool = True,
    ) -> IdempotencyClaim | Replay:
        """Claim `key` for this request, or return the stored answer of an earlier one.

        `turn_id` names the chat turn this request runs; `wait=False` answers 409 at once
        while the first request is still running instead of waiting for its answer.
        """
        if not _VALID_KEY.match(key):
            raise InvalidInput(HEADER, "must be 1-255 visible ASCII characters")
        params: dict[str, Any] = {
            "uid": user_id,
            "key": key,
            "hash": fingerprint,
            "lock": timedelta(seconds=self.lock_seconds),
            "ttl": self.ttl,
            "turn": turn_id,
            "lapsed": None,
        }
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.lock_seconds
        while True:
            async with self.engine.connect() as conn:
                if self._deferred:
                    await self._release_deferred(conn)
                claimed = (await conn.execute(_CLAIM, params)).first()
                if claimed is not None:
                    return IdempotencyClaim(
                        self,
                        user_id,
                        key,
                        fingerprint,
                        turn_id,
                        locked_until=claimed.locked_until,
                        lapses_at=loop.time() + self.lock_seconds,
                    )
                row = (await conn.execute(_READ, params)).first()
            if row is None:
                continue  # released between our two statements: claim again
            if bytes(row.request_hash) != fingerprint:
                raise InvalidInput(HEADER, "was already used with a different request")
            if row.status_code is not None:
                return Replay(row.status_code, row.response)
            if row.lapsed:
                replay = await self._recorded(user_id, key, fingerprint, row.turn_id)
                if replay is not None:
                    return replay
                params["lapsed"] = row.turn_id  # it left nothing: take the key over
                continue
            if not wait or loop.time() >= deadline:
                raise KeyInFlight(int(row.remaining or 1))  # when its claim lapses
            await asyncio.sleep(POLL_SECONDS)

    async def _recorded(
        self, user_id: str, key: str, fingerprint: bytes, turn_id: uuid.UUID | None
    ) -> Replay | None:
        """The answer a dead request's turn left in the journal, stored under its key."""
        if turn_id is None or self.recorded is None:
            return None
        body = await self.recorded(user_id, turn_id)
        if body is None:
            return None
        # Same key, same request (the hash matched): store the recorded answer under it.
        await IdempotencyClaim(self, user_id, key, fingerprint, turn_id).complete(200, body)
        return Replay(200, body)

    async def purge_expired(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(_PURGE)
