"""Bounded by design: every limit on what one user can grow, and a 4xx where a 500 used to be."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from chatkit.types import (
    InferenceOptions,
    ItemsListParams,
    ItemsListReq,
    ThreadAddUserMessageParams,
    ThreadCreateParams,
    ThreadListParams,
    ThreadRetryAfterItemParams,
    ThreadsAddUserMessageReq,
    ThreadsCreateReq,
    ThreadsListReq,
    ThreadsRetryAfterItemReq,
    UserMessageInput,
    UserMessageTagContent,
    UserMessageTextContent,
)
from pydantic import BaseModel

from tests.support.tasks import assert_invalid


async def chatkit(
    client: httpx.AsyncClient, req: BaseModel | str, headers: dict[str, str]
) -> httpx.Response:
    body = req if isinstance(req, str) else req.model_dump_json()
    return await client.post(
        "/api/chatkit", content=body, headers={**headers, "content-type": "application/json"}
    )


def message(
    text: str = "hello",
    *,
    quoted: str | None = None,
    tags: list[UserMessageTagContent] | None = None,
) -> UserMessageInput:
    return UserMessageInput(
        content=[UserMessageTextContent(text=text), *(tags or [])],
        attachments=[],
        quoted_text=quoted,
        inference_options=InferenceOptions(),
    )


@pytest.mark.parametrize("limit", [-1, 0, 101, 1_000_000, 2**63, 2**64])
async def test_chatkit_page_size_must_be_1_to_100(
    client: httpx.AsyncClient, alice: dict[str, str], limit: int
) -> None:
    threads = ThreadsListReq(params=ThreadListParams(limit=limit))
    assert_invalid(await chatkit(client, threads, alice), "params.limit")
    items = ItemsListReq(params=ItemsListParams(thread_id=str(uuid.uuid4()), limit=limit))
    assert_invalid(await chatkit(client, items, alice), "params.limit")


async def test_chatkit_page_sizes_within_bounds_answer(
    client: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    for limit in (None, 1, 100):
        r = await chatkit(client, ThreadsListReq(params=ThreadListParams(limit=limit)), alice)
        assert r.status_code == 200 and r.json()["has_more"] is False


@pytest.mark.parametrize("after", ["\x00", "thr\x00", "not-a-uuid", "x" * 1000])
async def test_chatkit_cursors_must_be_well_formed(
    client: httpx.AsyncClient, alice: dict[str, str], after: str
) -> None:
    threads = ThreadsListReq(params=ThreadListParams(after=after))
    assert_invalid(await chatkit(client, threads, alice), "params.after")
    if after != "not-a-uuid":  # a well-formed item id (of no item)
        items = ItemsListReq(params=ItemsListParams(thread_id=str(uuid.uuid4()), after=after))
        assert_invalid(await chatkit(client, items, alice), "params.after")
    retry = ThreadsRetryAfterItemReq(
        params=ThreadRetryAfterItemParams(thread_id=str(uuid.uuid4()), item_id=after + "\x00")
    )
    assert_invalid(await chatkit(client, retry, alice), "params.item_id")


def tag(data: dict[str, Any], label: str = "milk") -> UserMessageTagContent:
    return UserMessageTagContent(id="tag_1", text=label, data=data)


@pytest.mark.parametrize(
    ("field", "make"),
    [
        ("input.quoted_text", lambda: message(quoted="q" * 900_000)),
        ("input.quoted_text", lambda: message(quoted="nul\x00")),
        ("input.content", lambda: message(tags=[tag({"blob": "d" * 900_000})])),
        ("input.content", lambda: message(tags=[tag({"a": "d" * 5000}), tag({"b": "d" * 5000})])),
        ("input.content.data", lambda: message(tags=[tag({"nul": "\x00"})])),
        ("input.content", lambda: message(tags=[tag({}, label="l" * 9000)])),
        (
            "input.inference_options.model",
            lambda: UserMessageInput(
                content=[UserMessageTextContent(text="hi")],
                attachments=[],
                inference_options=InferenceOptions(model="m" * 1000),
            ),
        ),
    ],
)
async def test_chatkit_free_text_is_capped(
    client: httpx.AsyncClient,
    alice: dict[str, str],
    field: str,
    make: Callable[[], UserMessageInput],
) -> None:
    create = ThreadsCreateReq(params=ThreadCreateParams(input=make()))
    assert_invalid(await chatkit(client, create, alice), field)
    add = ThreadsAddUserMessageReq(
        params=ThreadAddUserMessageParams(thread_id=str(uuid.uuid4()), input=make())
    )
    assert_invalid(await chatkit(client, add, alice), field)
    assert (await client.get("/api/conversations", headers=alice)).json()["conversations"] == []


async def test_chatkit_message_with_a_small_tag_is_accepted(
    client: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    req = ThreadsCreateReq(
        params=ThreadCreateParams(
            input=message("show my tasks", quoted="earlier", tags=[tag({"id": 3})])
        )
    )
    r = await chatkit(client, req, alice)
    assert r.status_code == 200 and "thread.created" in r.text


# --- the offline model and MCP: ids no task can have ------------------------------------------
