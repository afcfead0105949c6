"""Idempotency-Key: a retried request returns the first answer instead of running again.

Per user and key: the first request claims the key (one INSERT), runs, and stores its 2xx
answer; a repeat with the same body gets that answer back (`Idempotent-Replayed: true`); a
concurrent repeat waits for the first to finish; a repeat with a different body answers 422.
Failed requests release the key so the client can retry. Keys expire after
IDEMPOTENCY_TTL_SECONDS; a key whose request crashed is taken over after its claim lapses.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import orjson
from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.errors import Conflict, InvalidInput

HEADER = "Idempotency-Key"
_VALID_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
POLL_SECONDS = 0.1

_CLAIM = text(
    """
    INSERT INTO idempotency_keys AS k (user_id, key, request_hash, locked_until, expires_at)
    VALUES (:uid, :key, :hash, now() + :lock, now() + :ttl)
    ON CONFLICT (user_id, key) DO UPDATE
       SET request_hash = EXCLUDED.request_hash, status_code = NULL, response = NULL,
           locked_until = EXCLUDED.locked_until, expires_at = EXCLUDED.expires_at
     WHERE k.expires_at < now() OR (k.status_code IS NULL AND k.locked_until < now())
    RETURNING 1
    """
)
_READ = text(
    "SELECT request_hash, status_code, response FROM idempotency_keys WHERE user_id = :uid AND key = :key"
)
_COMPLETE = text(
    """
    UPDATE idempotency_keys SET status_code = :status, response = :response
     WHERE user_id = :uid AND key = :key AND request_hash = :hash
    """
).bindparams(bindparam("response", type_=JSONB))
_RELEASE = text(
    "DELETE FROM idempotency_keys WHERE user_id = :uid AND key = :key AND request_hash = :hash AND status_code IS NULL"
)
_PURGE = text("DELETE FROM idempotency_keys WHERE expires_at < now() - interval '1 hour'")


class KeyInFlight(Conflict):
    code = "idempotency_key_in_use"
    detail = "A request with this Idempotency-Key is still running; retry shortly"


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

    async def complete(self, status_code: int, body: Any) -> None:
        async with self.store.engine.begin() as conn:
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
        async with self.store.engine.begin() as conn:
            await conn.execute(
                _RELEASE, {"uid": self.user_id, "key": self.key, "hash": self.request_hash}
            )


def request_hash(method: str, path: str, body: Any) -> bytes:
    return hashlib.sha256(orjson.dumps([method, path, body], option=orjson.OPT_SORT_KEYS)).digest()


class IdempotencyStore:
    def __init__(self, engine: AsyncEngine, *, ttl_seconds: int, lock_seconds: float) -> None:
        self.engine = engine
        self.ttl = timedelta(seconds=ttl_seconds)
        self.lock_seconds = lock_seconds

    async def begin(self, user_id: str, key: str, fingerprint: bytes) -> IdempotencyClaim | Replay:
        """Claim `key` for this request, or return the stored answer of an earlier one."""
        if not _VALID_KEY.match(key):
            raise InvalidInput(HEADER, "must be 1-255 visible ASCII characters")
        params = {
            "uid": user_id,
            "key": key,
            "hash": fingerprint,
            "lock": timedelta(seconds=self.lock_seconds),
            "ttl": self.ttl,
        }
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.lock_seconds
        while True:
            async with self.engine.begin() as conn:
                if (await conn.execute(_CLAIM, params)).first() is not None:
                    return IdempotencyClaim(self, user_id, key, fingerprint)
                row = (await conn.execute(_READ, params)).first()
            if row is None:
                continue  # released between our two statements: claim again
            if bytes(row.request_hash) != fingerprint:
                raise InvalidInput(HEADER, "was already used with a different request")
            if row.status_code is not None:
                return Replay(row.status_code, row.response)
            if loop.time() >= deadline:
                raise KeyInFlight()
            await asyncio.sleep(POLL_SECONDS)

    async def purge_expired(self) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(_PURGE)
