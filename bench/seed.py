"""Rows written straight into the benchmark's database: long conversations (W4) and a user at
the task cap (W7), faster than turns could make them."""

from __future__ import annotations

import json
import uuid
from typing import Any

import psycopg

from backend.chat.history import count_tokens

REPLY = "Done: added it."


def seeded_turn(user: str, n: int) -> list[tuple[Any, ...]]:
    """The user's message and the assistant's reply of an earlier tool-calling turn, as rows
    (user, role, content, tool_calls, items, token_count)."""
    question = f"{user} earlier task {n}"
    call_id = f"call_seed_{n}"
    result = {"task_id": n + 1, "status": "created", "title": question}
    items: list[dict[str, Any]] = [
        {
            "type": "function_call",
            "call_id": call_id,
            "name": "add_task",
            "arguments": json.dumps({"title": question}),
        },
        {"type": "function_call_output", "call_id": call_id, "output": json.dumps(result)},
        {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": REPLY}],
        },
    ]
    calls = [{"tool": "add_task", "arguments": {"title": question}, "result": result}]
    return [
        (user, "user", question, None, None, count_tokens(question)),
        (
            user,
            "assistant",
            REPLY,
            json.dumps(calls),
            json.dumps(items),
            count_tokens(REPLY, items),
        ),
    ]


def seed_conversations(db_url: str, user: str, messages: int, count: int) -> list[str]:
    """`count` conversations with `messages` stored messages shaped like real tool-calling turns."""
    cids = [uuid.uuid4() for _ in range(count)]
    turns = [row for n in range(messages // 2) for row in seeded_turn(user, n)]
    rows = [(cid, *row) for cid in cids for row in turns]
    with psycopg.connect(db_url) as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO conversations (id, user_id, title) VALUES (%s, %s, 'long')",
            [(cid, user) for cid in cids],
        )
        cur.executemany(
            "INSERT INTO messages (conversation_id, user_id, role, content, tool_calls, items, token_count) "
            "VALUES (%s, %s, %s, %s, %s::jsonb, %s::jsonb, %s)",
            rows,
        )
    return [str(cid) for cid in cids]


def seed_tasks(db_url: str, user: str, count: int) -> None:
    """`count` tasks of maximum size (200-character title, 2,000-character description)."""
    rows = [(user, n + 1, f"{n:05d} " + "t" * 194, "d" * 2000) for n in range(count)]
    with psycopg.connect(db_url) as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO tasks (user_id, number, title, description) VALUES (%s, %s, %s, %s)", rows
        )
        # The count and the last number the service keeps (seeding bypasses it).
        cur.execute(
            "INSERT INTO task_counts (user_id, tasks, last_number) VALUES (%s, %s, %s) "
            "ON CONFLICT (user_id) DO UPDATE SET tasks = task_counts.tasks + EXCLUDED.tasks, "
            "last_number = task_counts.last_number + EXCLUDED.last_number",
            (user, count, count),
        )
