"""What a ChatKit request may carry, checked before ChatKit or the store sees it (422 otherwise).

ChatKit's own types accept any int as a page size and any string as a cursor or as text; the
store would pass them on to PostgreSQL (bigint overflow, NUL bytes) or keep them (a 900 KB
`quoted_text`). Every field a user can fill is bounded here, with the same rules as /api/chat:
- page sizes 1..MAX_PAGE_SIZE; cursors and item ids well-formed (thread ids are UUIDs);
- the message text (all its parts' text together) at most MAX_MESSAGE_CHARS, and so are
  `quoted_text` and the tags' text and data together;
- short fields (tag id and group, model, tool choice) at most SHORT_MAX characters;
- nothing stored may hold NUL characters or lone surrogates.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import orjson
from chatkit.types import (
    ItemsFeedbackReq,
    ItemsListReq,
    ThreadsAddUserMessageReq,
    ThreadsCreateReq,
    ThreadsListReq,
    ThreadsRetryAfterItemReq,
    UserMessageInput,
    UserMessageTagContent,
)

from backend.chatkit.store import AttachmentsNotSupported
from backend.core.errors import InvalidInput
from backend.core.text import clean_text, require_storable

MAX_PAGE_SIZE = 100
SHORT_MAX = 200
_ITEM_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")  # generated ids: `msg_<32 hex>`, `tc_<32 hex>`...


def check_request(req: Any, max_chars: int) -> None:
    """Raise `InvalidInput` (422) for anything outside the limits above."""
    if isinstance(req, (ThreadsListReq, ItemsListReq)):
        _check_limit(req.params.limit)
        if req.params.after is not None:
            if isinstance(req, ThreadsListReq):
                _check_thread_id("params.after", req.params.after)
            else:
                _check_item_id("params.after", req.params.after)
    if isinstance(req, ThreadsRetryAfterItemReq):
        _check_item_id("params.item_id", req.params.item_id)
    if isinstance(req, ItemsFeedbackReq):
        if len(req.params.item_ids) > MAX_PAGE_SIZE:
            raise InvalidInput("params.item_ids", f"must hold at most {MAX_PAGE_SIZE} ids")
        for item_id in req.params.item_ids:
            _check_item_id("params.item_ids", item_id)
    if isinstance(req, (ThreadsCreateReq, ThreadsAddUserMessageReq)):
        check_input(req.params.input, max_chars)


def check_input(message: UserMessageInput, max_chars: int) -> None:
    """The same rules as /api/chat's message, plus bounds on everything else a message stores."""
    if message.attachments:
        raise AttachmentsNotSupported()
    clean_text("input.content", "".join(part.text for part in message.content), max_chars)
    if message.quoted_text is not None:
        _check_text("input.quoted_text", message.quoted_text, max_chars)
    tags = [p for p in message.content if isinstance(p, UserMessageTagContent)]
    tag_chars = 0
    for tag in tags:
        _check_text("input.content.id", tag.id, SHORT_MAX)
        if tag.group is not None:
            _check_text("input.content.group", tag.group, SHORT_MAX)
        try:
            data = orjson.dumps(tag.data).decode()
        except TypeError:  # a lone surrogate in a key or value
            raise InvalidInput("input.content.data", "must be valid Unicode") from None
        if "\\u0000" in data:
            raise InvalidInput("input.content.data", "must not contain NUL characters")
        tag_chars += len(tag.text) + len(data)
    if tag_chars > max_chars:
        raise InvalidInput("input.content", f"tags must hold at most {max_chars} characters")
    options = message.inference_options
    if options.model is not None:
        _check_text("input.inference_options.model", options.model, SHORT_MAX)
    if options.tool_choice is not None:
        _check_text("input.inference_options.tool_choice.id", options.tool_choice.id, SHORT_MAX)


def _check_limit(limit: int | None) -> None:
    # None (and only None) means ChatKit's default page size.
    if limit is not None and not 1 <= limit <= MAX_PAGE_SIZE:
        raise InvalidInput("params.limit", f"must be between 1 and {MAX_PAGE_SIZE}")


def _check_thread_id(field: str, value: str) -> None:
    try:
        uuid.UUID(value)
    except ValueError:
        raise InvalidInput(field, "must be a thread id") from None


def _check_item_id(field: str, value: str) -> None:
    if not _ITEM_ID.fullmatch(value):
        raise InvalidInput(field, "must be an item id")


def _check_text(field: str, value: str, max_chars: int) -> None:
    if len(value) > max_chars:
        raise InvalidInput(field, f"must be at most {max_chars} characters")
    require_storable(field, value)
