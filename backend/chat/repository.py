"""The `conversations` and `messages` tables: every read and write of them is here.

The turn engine (`chat.turn`), the REST conversations API and the ChatKit store all call these
functions; none of them writes SQL of its own. Each function is one statement (one round trip)
on the autocommit engine; `record_tool_call` appends its record to the statement of the tool's
task change (`tasks.actions`), so the change and its record commit together.

The turn journal (see `chat.turn` for the rules):
- `start_turn` claims (or creates) the conversation and writes the user message and a reply
  placeholder, both `pending` (hidden from every read);
- `record_tool_call` appends a tool call to the placeholder (now `running`) and makes the user
  message and the conversation visible, in the statement that makes the call's change;
- `finish_turn` writes the reply (`done`); `interrupt_turn` writes a note (`interrupted`) if a
  tool committed, else removes the turn's rows (and a conversation the turn created).
A `running` reply whose turn no longer holds the claim (the process died) reads as interrupted.
"""

from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import TextClause, Uuid, bindparam, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from backend.chat.history import INTERRUPTED_NOTE
from backend.errors import Conflict, NotFound, RateLimited

MAX_PAGE_BYTES = 1_000_000
"""The default of MAX_PAGE_BYTES: a page of messages stops before this many bytes."""
_JSONB_OR_NULL = JSONB(none_as_null=True)  # None is SQL NULL (COALESCE keeps the stored value)


class ConversationNotFound(NotFound):
    code = "conversation_not_found"
    detail = "Conversation not found"


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
class ConversationRow:
    id: uuid.UUID
    title: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(slots=True)
class MessageRow:
    id: int
    item_id: str
    role: str
    content: str
    tool_calls: list[dict[str, Any]] | None
    item: dict[str, Any] | None
    status: str
    created_at: datetime


@dataclass(slots=True)
class StartedTurn:
    history: list[HistoryRow]
    user_row: int | None
    """The user message's row; None when the turn answers a message stored earlier (retry)."""
    reply_row: int


# --- the turn journal ---------------------------------------------------------------------

# The window: newest HISTORY_MAX_MESSAGES visible rows by id, then those whose running token sum
# (newest first) fits the budget. Bounded by the LIMIT, whatever the conversation's length.
_WINDOW = """
        SELECT id, role, content, items, status,
               sum(token_count) OVER (ORDER BY id DESC) AS running
          FROM (SELECT id, role, content, items, status, token_count
                  FROM messages
                 WHERE conversation_id = {conversation} AND status <> 'pending'
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
         WHERE conversation_id IN (SELECT id FROM claimed) AND status = 'pending'
    ), repaired AS (
        UPDATE messages
           SET status = 'interrupted', content = CASE WHEN content = '' THEN :note ELSE content END
         WHERE conversation_id IN (SELECT id FROM claimed) AND status = 'running'
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
_RECORD_TOOL_CALL = """
    , entry AS (
        SELECT jsonb_build_array(jsonb_build_object(
                   'tool', CAST(:tool AS text), 'arguments', CAST(:arguments AS jsonb),
                   'result', CAST(o.text AS jsonb))) AS call,
               jsonb_build_array(
                   CAST(:call_item AS jsonb),
                   jsonb_build_object('type', 'function_call_output',
                                      'call_id', CAST(:call_id AS text), 'output', o.text)) AS items,
               (:call_bytes + octet_length(o.text)) / 3 AS tokens
          FROM output AS o
    ), recorded AS (
        UPDATE messages
           SET status = CASE WHEN messages.id = :reply THEN 'running' ELSE 'done' END,
               tool_calls = CASE WHEN messages.id = :reply
                   THEN COALESCE(messages.tool_calls, '[]'::jsonb) || e.call
                   ELSE messages.tool_calls END,
               items = CASE WHEN messages.id = :reply
                   THEN COALESCE(messages.items, '[]'::jsonb) || e.items ELSE messages.items END,
               token_count = CASE WHEN messages.id = :reply
                   THEN messages.token_count + e.tokens ELSE messages.token_count END
          FROM entry AS e
         WHERE messages.id IN (:user_row, :reply) AND messages.turn_id = :turn
        RETURNING messages.id
    ), orphaned AS (
        INSERT INTO messages (conversation_id, user_id, role, content, tool_calls, items,
                              token_count, item_id, turn_id, status, created_at)
        SELECT c.id, c.user_id, 'assistant', :note, e.call, e.items, e.tokens, :orphan_item_id,
               :turn, 'interrupted', now()
          FROM entry AS e, conversations AS c
         WHERE c.id = :cid AND NOT EXISTS (SELECT 1 FROM recorded)
    ), shown AS (
        UPDATE conversations SET listed = true
         WHERE id = :cid AND NOT listed AND EXISTS (SELECT 1 FROM output)
    )
    SELECT text FROM output
"""


@functools.cache
def _recorded(ctes: str) -> TextClause:
    return text("WITH " + ctes + _RECORD_TOOL_CALL)


_FINISH = text(
    """
    WITH reply AS (
        UPDATE messages
           SET content = :reply_text, tool_calls = :tool_calls, items = :items,
               token_count = :reply_tokens, item = :item, status = 'done'
         WHERE id = :reply AND turn_id = :turn
        RETURNING id
    ), asked AS (
        UPDATE messages SET status = 'done' WHERE id = :user_row AND turn_id = :turn
    ), touched AS (
        UPDATE conversations
           SET updated_at = now(), listed = true,
               active_turn = CASE WHEN active_turn = :turn THEN NULL ELSE active_turn END,
               active_turn_expires_at = CASE WHEN active_turn = :turn THEN NULL
                                             ELSE active_turn_expires_at END
         WHERE id = :cid AND user_id = :uid
    )
    SELECT id FROM reply
    """
).bindparams(
    bindparam("tool_calls", type_=_JSONB_OR_NULL),
    bindparam("items", type_=_JSONB_OR_NULL),
    bindparam("item", type_=_JSONB_OR_NULL),
)

# A failed turn: keep what its tools committed, under a note; drop what they did not.
_INTERRUPT = text(
    """
    WITH kept AS (
        UPDATE messages
           SET status = CASE WHEN id = :reply THEN 'interrupted' ELSE 'done' END,
               content = CASE WHEN id = :reply THEN :note ELSE content END
         WHERE id IN (:user_row, :reply) AND turn_id = :turn
           AND EXISTS (SELECT 1 FROM messages WHERE id = :reply AND status = 'running')
        RETURNING id, tool_calls
    ), dropped AS (
        DELETE FROM messages WHERE id IN (:user_row, :reply) AND turn_id = :turn
           AND status = 'pending'
    ), released AS (
        UPDATE conversations
           SET active_turn = NULL, active_turn_expires_at = NULL,
               updated_at = CASE WHEN EXISTS (SELECT 1 FROM kept) THEN now() ELSE updated_at END
         WHERE id = :cid AND active_turn = :turn
    )
    SELECT tool_calls FROM kept WHERE id = :reply
    """
)
# A failed first turn that committed nothing: the conversation it created goes too.
_DROP_UNLISTED = text(
    "DELETE FROM conversations WHERE id = :cid AND user_id = :uid AND NOT listed "
    "AND active_turn = :turn"
)
_RECORDED_TURN = text(
    """
    SELECT m.id, m.conversation_id, m.content, m.tool_calls, m.status
      FROM messages m
     WHERE m.turn_id = :turn AND m.user_id = :uid AND m.role = 'assistant'
       AND m.status <> 'pending'
    """
).bindparams(bindparam("turn", type_=Uuid))


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
        "user_item_id": user_item_id or _new_item_id(),
        "user_item": user_item,
        "reply_item_id": reply_item_id or _new_item_id(),
        "adopt": adopt,
        "max_messages": max_messages,
        "budget": token_budget,
        "max_active": max_active,
    }
    async with engine.connect() as conn:
        if create:
            try:
                rows = (await conn.execute(_CREATE, params)).all()
            except IntegrityError:  # the id is taken (by someone else's conversation, say)
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


async def record_tool_call(
    engine: AsyncEngine,
    *,
    conversation_id: uuid.UUID,
    turn: uuid.UUID,
    user_row: int | None,
    reply_row: int,
    tool: str,
    arguments: dict[str, Any],
    call_item: dict[str, Any],
    ctes: str,
    params: dict[str, Any],
) -> str | None:
    """Journal one tool call in the statement that makes its change.

    `ctes` define `output(text)`, the call's result as JSON text (after the change's own CTEs,
    if any; `params` are theirs). Returns that text, or None when `output` has no row (the
    change found no task): then nothing is recorded.
    """
    item = orjson.dumps(call_item).decode()
    journal = {
        "cid": conversation_id,
        "turn": turn,
        "user_row": user_row if user_row is not None else reply_row,
        "reply": reply_row,
        "tool": tool,
        "arguments": orjson.dumps(arguments).decode(),
        "call_item": item,
        "call_bytes": len(item),
        "call_id": call_item.get("call_id", ""),
        "note": INTERRUPTED_NOTE,
        "orphan_item_id": _new_item_id(),
    }
    async with engine.connect() as conn:
        output: str | None = (await conn.execute(_recorded(ctes), {**params, **journal})).scalar()
    return output


async def finish_turn(
    engine: AsyncEngine,
    *,
    user_id: str,
    conversation_id: uuid.UUID,
    turn: uuid.UUID,
    user_row: int | None,
    reply_row: int,
    reply: str,
    reply_tokens: int,
    tool_calls: list[dict[str, Any]] | None,
    items: list[dict[str, Any]] | None,
    item: dict[str, Any] | None = None,
) -> None:
    """Write the reply, show the turn, release the claim. 404 if the conversation was deleted."""
    params = {
        "cid": conversation_id,
        "uid": user_id,
        "turn": turn,
        "user_row": user_row if user_row is not None else reply_row,
        "reply": reply_row,
        "reply_text": reply,
        "reply_tokens": reply_tokens,
        "tool_calls": tool_calls or None,
        "items": items or None,
        "item": item,
    }
    await _one_row(engine, _FINISH, params)


async def interrupt_turn(
    engine: AsyncEngine,
    *,
    user_id: str,
    conversation_id: uuid.UUID,
    turn: uuid.UUID,
    user_row: int | None,
    reply_row: int,
    created: bool,
    note: str = INTERRUPTED_NOTE,
) -> RecordedTurn | None:
    """End a failed turn and release the claim; what it left if its tools had committed something."""
    params = {
        "cid": conversation_id,
        "uid": user_id,
        "turn": turn,
        "user_row": user_row if user_row is not None else reply_row,
        "reply": reply_row,
        "note": note,
    }
    async with engine.connect() as conn:
        if created:
            dropped = await conn.execute(_DROP_UNLISTED, params)
            if dropped.rowcount:
                return None
        kept = (await conn.execute(_INTERRUPT, params)).first()
    if kept is None:
        return None
    return RecordedTurn(conversation_id, reply_row, note, kept.tool_calls or [], interrupted=True)


@dataclass(slots=True)
class RecordedTurn:
    conversation_id: uuid.UUID
    message_id: int
    reply: str
    tool_calls: list[dict[str, Any]]
    interrupted: bool


async def recorded_turn(
    engine: AsyncEngine, *, user_id: str, turn: uuid.UUID
) -> RecordedTurn | None:
    """What a turn left in its conversation, if it finished or its tools committed something.

    Asked about turns whose request is gone: a reply still `running` reads as interrupted.
    """
    async with engine.connect() as conn:
        row = (await conn.execute(_RECORDED_TURN, {"turn": turn, "uid": user_id})).first()
    if row is None:
        return None
    interrupted = row.status in ("running", "interrupted")
    return RecordedTurn(
        conversation_id=row.conversation_id,
        message_id=row.id,
        reply=row.content or (INTERRUPTED_NOTE if interrupted else ""),
        tool_calls=row.tool_calls or [],
        interrupted=interrupted,
    )


# --- conversations ------------------------------------------------------------------------

_CONVERSATION_COLUMNS = "c.id, c.title, c.created_at, c.updated_at"
_GET_CONVERSATION = text(
    f"SELECT {_CONVERSATION_COLUMNS} FROM conversations c WHERE c.id = :cid AND c.user_id = :uid"
)
_RENAME = text(
    f"""
    UPDATE conversations c SET title = :title, updated_at = now()
     WHERE c.id = :cid AND c.user_id = :uid
    RETURNING {_CONVERSATION_COLUMNS}
    """
)
_DELETE_CONVERSATION = text(
    "DELETE FROM conversations WHERE id = :cid AND user_id = :uid RETURNING id"
)
_SAVE_THREAD = text(
    """
    INSERT INTO conversations AS c (id, user_id, title, created_at, updated_at)
    VALUES (:cid, :uid, :title, :created_at, now())
    ON CONFLICT (id) DO UPDATE SET title = EXCLUDED.title, updated_at = now()
     WHERE c.user_id = EXCLUDED.user_id
    RETURNING id
    """
)
_PURGE_UNLISTED = text(
    """
    DELETE FROM conversations
     WHERE NOT listed AND (active_turn IS NULL OR active_turn_expires_at < now())
       AND updated_at < now() - interval '1 hour'
    """
)


async def _one_row(engine: AsyncEngine, statement: Any, params: dict[str, Any]) -> Any:
    """The statement's first row; a user's conversation that is not there is a 404."""
    async with engine.connect() as conn:
        row = (await conn.execute(statement, params)).first()
    if row is None:
        raise ConversationNotFound()
    return row


def _conversation(row: Any) -> ConversationRow:
    return ConversationRow(row.id, row.title, row.created_at, row.updated_at)


async def get_conversation(
    engine: AsyncEngine, *, user_id: str, conversation_id: uuid.UUID
) -> ConversationRow:
    params = {"cid": conversation_id, "uid": user_id}
    return _conversation(await _one_row(engine, _GET_CONVERSATION, params))


async def list_conversations(
    engine: AsyncEngine,
    *,
    user_id: str,
    limit: int,
    after: uuid.UUID | None,
    descending: bool = True,
) -> tuple[list[ConversationRow], uuid.UUID | None]:
    """Listed conversations by last activity; `after` is the last id of the previous page.

    An `after` that is not one of the user's conversations is a 404.
    """
    cmp, direction = ("<", "DESC") if descending else (">", "ASC")
    params: dict[str, Any] = {"uid": user_id, "limit": limit + 1}
    cursor = ""
    async with engine.connect() as conn:
        if after is not None:
            if (
                await conn.execute(_GET_CONVERSATION, {"cid": after, "uid": user_id})
            ).first() is None:
                raise ConversationNotFound()
            params["after"] = after
            cursor = (
                f"AND (c.updated_at, c.id) {cmp} "
                "(SELECT updated_at, id FROM conversations WHERE id = :after AND user_id = :uid)"
            )
        query = text(
            f"SELECT {_CONVERSATION_COLUMNS} FROM conversations c "
            f"WHERE c.user_id = :uid AND c.listed {cursor} "
            f"ORDER BY c.updated_at {direction}, c.id {direction} LIMIT :limit"
        )
        rows = (await conn.execute(query, params)).all()
    page = [_conversation(r) for r in rows[:limit]]
    return page, (page[-1].id if len(rows) > limit else None)


async def rename_conversation(
    engine: AsyncEngine, *, user_id: str, conversation_id: uuid.UUID, title: str | None
) -> ConversationRow:
    params = {"cid": conversation_id, "uid": user_id, "title": title}
    return _conversation(await _one_row(engine, _RENAME, params))


async def delete_conversation(
    engine: AsyncEngine, *, user_id: str, conversation_id: uuid.UUID
) -> None:
    await _one_row(engine, _DELETE_CONVERSATION, {"cid": conversation_id, "uid": user_id})


async def save_thread(
    engine: AsyncEngine,
    *,
    user_id: str,
    conversation_id: uuid.UUID,
    title: str | None,
    created_at: datetime,
) -> None:
    """Create or retitle a conversation (ChatKit's save_thread). 404 if it is someone else's."""
    params = {"cid": conversation_id, "uid": user_id, "title": title, "created_at": created_at}
    await _one_row(engine, _SAVE_THREAD, params)


async def purge_unlisted(engine: AsyncEngine) -> None:
    """Conversations whose first turn died before committing anything (hidden; kept an hour)."""
    async with engine.connect() as conn:
        await conn.execute(_PURGE_UNLISTED)


# --- messages -----------------------------------------------------------------------------

# A running reply whose turn no longer holds the claim was cut off by a crash: it reads as
# interrupted (and is written so by the next turn's claim).
_MESSAGE_COLUMNS = """
    m.id, m.item_id, m.role, m.content, m.tool_calls, m.item, m.created_at,
    CASE WHEN m.status = 'running'
              AND NOT (c.active_turn IS NOT DISTINCT FROM m.turn_id
                       AND c.active_turn_expires_at > now())
         THEN 'interrupted' ELSE m.status END AS status
"""
_MESSAGES_FROM = """
      FROM conversations c JOIN messages m ON m.conversation_id = c.id
     WHERE c.id = :cid AND c.user_id = :uid AND m.status <> 'pending'
"""
_LOAD_ITEM = text(f"SELECT {_MESSAGE_COLUMNS} {_MESSAGES_FROM} AND m.item_id = :item_id")
_DELETE_ITEM = text(
    "DELETE FROM messages WHERE item_id = :item_id AND conversation_id = :cid AND user_id = :uid"
)
_DELETE_AFTER_ITEM = text(
    """
    DELETE FROM messages
     WHERE conversation_id = :cid AND user_id = :uid
       AND id > (SELECT id FROM messages WHERE item_id = :item_id AND conversation_id = :cid
                    AND user_id = :uid AND role = 'user')
    RETURNING item_id
    """
)
_UPSERT_ITEM = text(
    """
    WITH c AS (
        UPDATE conversations SET updated_at = now() WHERE id = :cid AND user_id = :uid
        RETURNING id, user_id
    )
    INSERT INTO messages AS m (conversation_id, user_id, role, content, token_count, item_id,
                               item, created_at)
    SELECT c.id, c.user_id, :role, :content, :tokens, :item_id, :item, now() FROM c
    ON CONFLICT (item_id) DO UPDATE
       SET role = EXCLUDED.role, content = EXCLUDED.content, item = EXCLUDED.item
     WHERE m.conversation_id = EXCLUDED.conversation_id AND m.user_id = EXCLUDED.user_id
    RETURNING id
    """
).bindparams(bindparam("item", type_=JSONB))


def _message(row: Any) -> MessageRow:
    content = row.content
    if row.status == "interrupted" and not content:
        content = INTERRUPTED_NOTE
    return MessageRow(
        row.id, row.item_id, row.role, content, row.tool_calls, row.item, row.status, row.created_at
    )


_SIZE = "octet_length(m.content) + COALESCE(octet_length(m.tool_calls::text), 0)"


async def list_messages(
    engine: AsyncEngine,
    *,
    user_id: str,
    conversation_id: uuid.UUID,
    limit: int,
    after_id: int | None = None,
    after_item: str | None = None,
    descending: bool = False,
    max_bytes: int = MAX_PAGE_BYTES,
) -> tuple[list[MessageRow], bool]:
    """Visible messages in order; `after_id` / `after_item` continue a page. (rows, has_more)

    A page holds at most `limit` messages and stops before its text and tool calls pass
    `max_bytes` (always at least one message), so a page of tool-heavy turns stays small; the
    database sums the sizes and sends only the page's rows. The caller has checked the
    conversation is the user's (an empty page otherwise).
    """
    cmp, direction = ("<", "DESC") if descending else (">", "ASC")
    params: dict[str, Any] = {
        "cid": conversation_id,
        "uid": user_id,
        "limit": limit + 1,
        "max_bytes": max_bytes,
    }
    cursor = ""
    if after_id is not None:
        params["after"] = after_id
        cursor = f"AND m.id {cmp} :after"
    elif after_item is not None:
        params["after_item"] = after_item
        cursor = (
            f"AND m.id {cmp} (SELECT id FROM messages WHERE item_id = :after_item "
            "AND conversation_id = :cid)"
        )
    query = text(
        f"""
        SELECT * FROM (
            SELECT {_MESSAGE_COLUMNS},
                   sum({_SIZE}) OVER (ORDER BY m.id {direction}) - ({_SIZE}) AS before,
                   count(*) OVER () AS fetched
              {_MESSAGES_FROM} {cursor}
             ORDER BY m.id {direction} LIMIT :limit
        ) AS window_ WHERE before < :max_bytes OR before = 0 ORDER BY id {direction}
        """
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(query, params)).all()
    page = [_message(r) for r in rows[:limit]]
    return page, bool(rows) and rows[0].fetched > len(page)


async def load_message(
    engine: AsyncEngine, *, user_id: str, conversation_id: uuid.UUID, item_id: str
) -> MessageRow | None:
    params = {"cid": conversation_id, "uid": user_id, "item_id": item_id}
    async with engine.connect() as conn:
        row = (await conn.execute(_LOAD_ITEM, params)).first()
    return _message(row) if row is not None else None


async def upsert_message(
    engine: AsyncEngine,
    *,
    user_id: str,
    conversation_id: uuid.UUID,
    role: str,
    content: str,
    tokens: int,
    item_id: str,
    item: dict[str, Any],
) -> None:
    """Store a ChatKit item outside a turn (an upsert: ChatKit may add the same item twice)."""
    params = {
        "cid": conversation_id,
        "uid": user_id,
        "role": role,
        "content": content,
        "tokens": tokens,
        "item_id": item_id,
        "item": item,
    }
    await _one_row(engine, _UPSERT_ITEM, params)


async def delete_message(
    engine: AsyncEngine, *, user_id: str, conversation_id: uuid.UUID, item_id: str
) -> None:
    params = {"cid": conversation_id, "uid": user_id, "item_id": item_id}
    async with engine.connect() as conn:
        await conn.execute(_DELETE_ITEM, params)


async def delete_after_message(
    engine: AsyncEngine, *, user_id: str, conversation_id: uuid.UUID, item_id: str
) -> list[str]:
    """Remove everything after a user message (a retry answers it again); the removed item ids."""
    params = {"cid": conversation_id, "uid": user_id, "item_id": item_id}
    async with engine.connect() as conn:
        return [r.item_id for r in (await conn.execute(_DELETE_AFTER_ITEM, params)).all()]


def _new_item_id() -> str:
    return "msg_" + uuid.uuid4().hex
