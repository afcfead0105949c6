"""backend.web.chat's SSE framing: chat events as `data: {json}\n\n`, the events ready together
in one write. Called directly with a small async iterator: no app, no socket."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson

from backend.web.chat import _sse


async def _batches(*batches: list[dict[str, Any]]) -> AsyncIterator[list[dict[str, Any]]]:
    for batch in batches:
        yield batch


async def _written(*batches: list[dict[str, Any]]) -> list[bytes]:
    return [chunk async for chunk in _sse(_batches(*batches))]


async def test_each_event_is_one_data_line_of_compact_json() -> None:
    (chunk,) = await _written([{"type": "text.delta", "delta": "Hi"}])
    assert chunk == b'data: {"type":"text.delta","delta":"Hi"}\n\n'


async def test_events_ready_together_go_out_in_one_write_in_order() -> None:
    events = [
        {"type": "conversation", "conversation_id": "c-1"},
        {"type": "text.delta", "delta": "Adding"},
        {"type": "tool_call", "name": "add_task"},
    ]
    chunks = await _written(events, [{"type": "done"}])
    assert len(chunks) == 2
    frames = chunks[0].split(b"\n\n")
    assert frames[-1] == b""
    assert [orjson.loads(f.removeprefix(b"data: ")) for f in frames[:-1]] == events
    assert chunks[1] == b'data: {"type":"done"}\n\n'


async def test_newlines_and_unicode_in_text_stay_inside_one_data_line() -> None:
    (chunk,) = await _written([{"delta": "line 1\nline 2\r\n\n🧪 é"}])
    assert chunk.count(b"\n") == 2  # only the frame's own terminator
    assert orjson.loads(chunk[len(b"data: ") : -2]) == {"delta": "line 1\nline 2\r\n\n🧪 é"}
    assert "🧪 é".encode() in chunk  # UTF-8, not \u escapes


async def test_an_empty_batch_writes_nothing_and_no_batches_write_no_chunks() -> None:
    assert await _written([]) == [b""]
    assert await _written() == []
