"""Bounded by design: every limit on what one user can grow, and a 4xx where a 500 used to be."""

from __future__ import annotations

import uuid

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine


async def seed_conversation(engine: AsyncEngine, contents: list[str]) -> uuid.UUID:
    """Alice's conversation holding these messages (user and assistant in turn)."""
    cid = uuid.uuid4()
    async with engine.begin() as conn:
        await conn.execute(
            text("INSERT INTO conversations (id, user_id, title) VALUES (:c, 'alice', 'big')"),
            {"c": cid},
        )
        for n, content in enumerate(contents):
            await conn.execute(
                text(
                    "INSERT INTO messages (conversation_id, user_id, role, content) "
                    "VALUES (:c, 'alice', :role, :content)"
                ),
                {"c": cid, "role": "user" if n % 2 == 0 else "assistant", "content": content},
            )
    return cid


async def test_a_page_of_messages_stops_at_max_page_bytes(
    small: httpx.AsyncClient, alice: dict[str, str], engine: AsyncEngine
) -> None:
    cid = await seed_conversation(engine, [f"{n:02d}" + "x" * 2998 for n in range(20)])
    seen: list[str] = []
    after = None
    while True:
        url = f"/api/conversations/{cid}?limit=200" + (f"&after={after}" if after else "")
        r = await small.get(url, headers=alice)
        assert r.status_code == 200
        page = r.json()
        # 3,000-byte messages against a 10,000-byte page: 4 messages (the last one crosses it)
        assert len(page["messages"]) <= 4 and len(r.content) < 20_000
        seen += [m["content"][:2] for m in page["messages"]]
        after = page["next_cursor"]
        if after is None:
            break
    assert seen == [f"{n:02d}" for n in range(20)]


async def test_one_message_larger_than_a_page_still_comes_back(
    small: httpx.AsyncClient, alice: dict[str, str], engine: AsyncEngine
) -> None:
    cid = await seed_conversation(engine, ["y" * 50_000])
    page = (await small.get(f"/api/conversations/{cid}", headers=alice)).json()
    assert len(page["messages"]) == 1 and page["next_cursor"] is None


# --- ChatKit -----------------------------------------------------------------------------------
