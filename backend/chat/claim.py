"""A turn's start: claim (or create) the conversation and open the turn's journal, in one statement.

The claim (`active_turn`, lasting TURN_LOCK_SECONDS) keeps two turns of one conversation from
interleaving, across replicas; a user holds at most MAX_ACTIVE_TURNS_PER_USER claims. The same
statement sweeps what dead turns left (their hidden rows go, a reply they left running becomes
interrupted), writes this turn's user message and reply placeholder, both `pending` (hidden from
every read until a tool commits or the turn finishes: see `chat.journal`), and reads the
history window.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from backend.chat import repository
from backend.chat.history import INTERRUPTED_NOTE
from backend.chat.repository import ConversationNotFound
from backend.core.errors import Conflict, RateLimited

_JSONB_OR_NULL = JSONB(none_as_null=True)  # None is SQL NULL (COALESCE keeps the stored value)


class TooManyTurns(RateLimited):
    code = "too_many_turns"

    def __init__(self, limit: int, retry_after: int) -> None:
        super().__init__(
            f"You already have {limit} replies being written (the most at once); "
            "retry when one is done",
            retry_after=retry_after,
        )


class TurnInProgress(Conflict):
    code = "turn_in_progress"
    detail = "Another message in this conversation is still being answered; retry when it is done"

    def __init__(self, retry_after: int) -> None:
        super().__init__(retry_after=retry_after)


@dataclass(slots=True)
class HistoryRow:
    id: int
    role: str
    content: str
    items: list[dict[str, Any]] | None
    status: str = "done"


@dataclass(slots=True)
class StartedTurn:
    history: list[HistoryRow]
    user_row: int | None
    """The user message's row; None when the turn answers a message stored earlier (retry)."""
    reply_row: int


# The window: newest HISTORY_MAX_MESSAGES visible rows by id, then those whose running token sum
# (newest first) fits the budget. Bounded by the LIMIT, whatever the conversation's length.
_WINDOW = """
        SELECT id, role, content, items, status,
               sum(token_count) OVER (ORDER BY id DESC) AS running
          FROM (SELECT id, role, content, items, status, token_count
                  FROM messages
                 WHERE user_id = :uid AND conversation_id = {conversation}
                   AND status <> 'pending'
                 ORDER BY id DESC
                 LIMIT :max_messages) AS newest
"""

# The turn's two rows. `:adopt` skips the user row: the turn answers a message already stored.
_TURN_ROWS = """
    INSERT INTO messages (conversation_id, user_id, role, content, token_count, item_id, item,
                          turn_id, status, created_at)
    SELECT c.id, :uid, v.role, v.content, v.tokens, v.item_id, v.item, :turn, 'pending', now()
      FROM {conversation} AS c,
           (VALUES (1, 'user', :user_content, :user_tokens, :user_item_id, :user_item),
                   (2, 'assistant', '', 0, :reply_item_id, CAST(NULL AS jsonb)))
             AS v(n, role, content, tokens, item_id, item)
     WHERE v.n = 2 OR NOT :adopt
     ORDER BY v.n
    RETURNING id, role
"""

# Room for one more running turn of this user (MAX_ACTIVE_TURNS_PER_USER, across replicas).
# Two claims at the same moment can both see room: the cap may be passed by that many, briefly.
_ROOM = """
    (SELECT count(*) FROM conversations AS busy
      WHERE busy.user_id = :uid AND busy.active_turn IS NOT NULL
        AND busy.active_turn_expires_at > now()) < :max_active
"""

# Claim an idle conversation, sweep what dead turns left (their hidden rows go, a reply they
# left running becomes interrupted), write this turn's rows, and read the history window: one
# statement. The CTEs share one snapshot, so the window sees neither the sweep nor the new rows.
_CLAIM = text(
    """
    WITH claimed AS (
        UPDATE conversations
           SET active_turn = :turn, active_turn_expires_at = now() + :lock
         WHERE id = :cid AND user_id = :uid
           AND (active_turn IS NULL OR active_turn_expires_at < now())
           AND """
    + _ROOM
    + """
        RETURNING id
    ), swept AS (
        DELETE FROM messages
         WHERE user_id = :uid AND conversation_id IN (SELECT id FROM claimed)
           AND status = 'pending'
    ), repaired AS (
        UPDATE messages
           SET status = 'interrupted', content = CASE WHEN content = '' THEN :note ELSE content END
         WHERE user_id = :uid AND conversation_id IN (SELECT id FROM claimed)
           AND status = 'running'
    ), stored AS ("""
    + _TURN_ROWS.format(conversation="claimed")
    + """)
    SELECT 'history' AS kind, w.id, w.role, w.content, w.items, w.status
      FROM claimed
      LEFT JOIN LATERAL ("""
    + _WINDOW.format(conversation="claimed.id")
    + """) AS w ON w.running <= :budget
    UNION ALL
    SELECT 'stored', id, role, NULL, NULL, NULL FROM stored
     ORDER BY 1, 2
    """
).bindparams(bindparam("user_item", type_=_JSONB_OR_NULL))

_CREATE = text(
    """
    WITH created AS (
        INSERT INTO conversations (id, user_id, title, created_at, updated_at, active_turn,
                                   active_turn_expires_at, listed)
        SELECT :cid, CAST(:uid AS varchar), CAST(:title AS varchar), now(), now(), :turn,
               now() + :lock, false
         WHERE """
    + _ROOM
    + """
        RETURNING id
    ), stored AS ("""
    + _TURN_ROWS.format(conversation="created")
    + """)
    SELECT id, role FROM stored ORDER BY id
    """
).bindparams(bindparam("user_item", type_=_JSONB_OR_NULL))

# Why a claim was refused: the conversation is gone (no row), busy, or the user is at the cap.
_CLAIM_STATE = text(
    """
    SELECT c.id IS NOT NULL AS found,
           COALESCE(c.active_turn IS NOT NULL AND c.active_turn_expires_at > now(), false) AS busy,
           CEIL(EXTRACT(EPOCH FROM c.active_turn_expires_at - now())) AS remaining,
           (SELECT CEIL(EXTRACT(EPOCH FROM min(o.active_turn_expires_at) - now()))
              FROM conversations o
             WHERE o.user_id = :uid AND o.active_turn IS NOT NULL
               AND o.active_turn_expires_at > now()) AS soonest
      FROM (SELECT 1) AS one
      LEFT JOIN conversations c ON c.id = :cid AND c.user_id = :uid
    """
)


# Appended to CTEs that define `output(text)`, the call's result (a task change's CTEs before them
# make the change and its record one statement). The token count is an estimate (bytes / 3)
# until `finish_turn` counts the whole reply; it only matters to a turn that never finishes.
# Should the turn's rows be gone (it outlived its claim and a newer turn swept them), the call
# is recorded on a reply row of its own, marked interrupted: a change is never left unrecorded.
def _lock(seconds: float) -> timedelta:
    return timedelta(seconds=seconds)


def _short_wait(seconds: Any) -> int:
    # Turns usually end long before their claim lapses: ask for a short wait, 1 to 5 s.
    return int(min(max(seconds if seconds is not None else 1, 1), 5))


async def _refused(
    conn: AsyncConnection, user_id: str, cid: uuid.UUID, max_active: int, create: bool
) -> Exception:
    """Why the claim (or the creation) of conversation `cid` was refused."""
    row = (await conn.execute(_CLAIM_STATE, {"cid": cid, "uid": user_id})).one()
    if not create and not row.found:
        return ConversationNotFound()
    if row.busy:
        return TurnInProgress(retry_after=_short_wait(row.remaining))
    return TooManyTurns(max_active, retry_after=_short_wait(row.soonest))


async def start_turn(
    engine: AsyncEngine,
    *,
    user_id: str,
    conversation_id: uuid.UUID,
    create: bool,
    title: str | None,
    turn: uuid.UUID,
    lock_seconds: float,
    user_content: str,
    user_tokens: int,
    user_item_id: str | None,
    user_item: dict[str, Any] | None,
    reply_item_id: str | None,
    adopt: bool,
    max_messages: int,
    token_budget: int,
    max_active: int,
) -> StartedTurn:
    """Claim (or create) the conversation, write the turn's hidden rows, load the history.

    Refused: 404 (not the user's conversation), 409 `turn_in_progress` (a turn is running in
    it), 429 `too_many_turns` (the user has `max_active` turns running).
    """
    params = {
        "cid": conversation_id,
        "uid": user_id,
        "title": title,
        "turn": turn,
        "lock": _lock(lock_seconds),
        "note": INTERRUPTED_NOTE,
        "user_content": user_content,
        "user_tokens": user_tokens,
        "user_item_id": user_item_id or repository.new_item_id(),
        "user_item": user_item,
        "reply_item_id": reply_item_id or repository.new_item_id(),
        "adopt": adopt,
        "max_messages": max_messages,
        "budget": token_budget,
        "max_active": max_active,
    }
    async with engine.connect() as conn:
        if create:
            try:
                rows = (await conn.execute(_CREATE, params)).all()
            except IntegrityError:  # the id is taken (by this user's own conversation)
                raise ConversationNotFound() from None
            if not rows:
                raise await _refused(conn, user_id, conversation_id, max_active, create)
            history: list[HistoryRow] = []
            stored = {r.role: r.id for r in rows}
        else:
            rows = (await conn.execute(_CLAIM, params)).all()
            if not rows:
                raise await _refused(conn, user_id, conversation_id, max_active, create)
            history = [
                HistoryRow(r.id, r.role, r.content, r.items, r.status)
                for r in rows
                if r.kind == "history" and r.id is not None
            ]
            stored = {r.role: r.id for r in rows if r.kind == "stored"}
    return StartedTurn(history=history, user_row=stored.get("user"), reply_row=stored["assistant"])
