"""backend.reliability.idempotency, the parts before the database: the request fingerprint behind
Idempotency-Key, the key's format, and the 409 for a key still in use."""

from __future__ import annotations

from typing import Any

import pytest

from backend.core.errors import InvalidInput
from backend.reliability.idempotency import HEADER, IdempotencyStore, KeyInFlight, request_hash

BODY = {"message": "Add milk", "conversation_id": None, "stream": False}


def test_the_fingerprint_is_a_sha256_digest_and_stable() -> None:
    first = request_hash("POST", "/api/chat", BODY)
    assert isinstance(first, bytes)
    assert len(first) == 32
    assert request_hash("POST", "/api/chat", dict(BODY)) == first


def test_the_order_of_a_bodys_keys_does_not_matter() -> None:
    reordered = dict(reversed(list(BODY.items())))
    nested_a = {"a": {"x": 1, "y": 2}, "b": [1, 2]}
    nested_b = {"b": [1, 2], "a": {"y": 2, "x": 1}}
    assert request_hash("POST", "/api/chat", reordered) == request_hash("POST", "/api/chat", BODY)
    assert request_hash("POST", "/p", nested_a) == request_hash("POST", "/p", nested_b)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("PUT", "/api/chat", BODY),
        ("POST", "/api/alice/chat", BODY),
        ("POST", "/api/chat", {**BODY, "message": "Add eggs"}),
        ("POST", "/api/chat", {**BODY, "stream": True}),
        ("POST", "/api/chat", {k: v for k, v in BODY.items() if k != "conversation_id"}),
        ("POST", "/api/chat", None),
    ],
)
def test_a_different_request_has_a_different_fingerprint(method: str, path: str, body: Any) -> None:
    assert request_hash(method, path, body) != request_hash("POST", "/api/chat", BODY)


def test_list_order_in_a_body_matters() -> None:
    assert request_hash("POST", "/p", {"ids": [1, 2]}) != request_hash(
        "POST", "/p", {"ids": [2, 1]}
    )


def _store() -> IdempotencyStore:
    return IdempotencyStore(None, ttl_seconds=60, lock_seconds=5)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "key",
    ["", "has space", "k" * 256, "clé", "tab\tkey", "nul\x00", "del\x7f", "line\nbreak"],
    ids=["empty", "space", "256-chars", "non-ascii", "tab", "nul", "del", "newline"],
)
async def test_a_malformed_key_is_refused_before_the_database(key: str) -> None:
    # The engine is None: a key that got as far as the database would raise AttributeError.
    with pytest.raises(InvalidInput) as caught:
        await _store().begin("alice", key, request_hash("POST", "/api/chat", BODY))
    assert caught.value.field == HEADER
    assert caught.value.status == 422


@pytest.mark.parametrize(("given", "header"), [(1, "1"), (4, "4"), (0, "1")])
def test_a_key_still_in_use_is_a_409_saying_when_to_retry(given: int, header: str) -> None:
    error = KeyInFlight(given)
    assert error.status == 409
    assert error.body()["code"] == "idempotency_key_in_use"
    assert "Idempotency-Key" in error.body()["detail"]
    assert set(error.body()) == {"detail", "code"}
    assert error.headers == {"Retry-After": header}
