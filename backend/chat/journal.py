"""The turn journal: every statement a chat turn writes, and the one that runs a tool call.

What each step leaves (the engine, `chat.turn`, calls them in this order):
- `start_turn` claims (or creates) the conversation, sweeps what dead turns left, writes the user
  message and a reply placeholder, both `pending` (hidden from every read), and reads the
  history window: one statement;
- each tool call is one statement (below): from the first one on, the conversation shows the
  user message and every tool call that took effect;
- `finish_turn` writes the reply (`done`); `interrupt_turn` writes a note (`interrupted`) if a
  tool committed, else removes the turn's rows (and a conversation the turn created).
A `running` reply whose turn no longer holds the claim (the process died) reads as interrupted.
So no task changes without the conversation saying so, and a retry never repeats a committed
tool call.

The tool-call statement, composed here and nowhere else, is three parts joined as CTEs:
1. the task change (`tasks.service.Change`): CTEs ending in `task`, the changed row, or no row
   when there was nothing to change (unknown id, the task cap reached);
2. `output(text)`: the result the model reads, as JSON text built from `task` by the statement
   itself, byte for byte what orjson writes for the same dict (`registry.cap_output` for a read),
   cut past `:max_output` characters the way `cap_output` cuts any oversized result;
3. the record: the call and `output` appended to the turn's reply row, in the same statement.
So a change and its record commit together, on the autocommit engine, in one round trip, and
what the model read is what the journal keeps. A read, or a result known before the statement
(a remote MCP server's), is recorded with `output` given as a parameter. Outside a turn (MCP's
own tools), `Unrecorded` runs parts 1 and 2 alone.
"""

from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import TextClause, Uuid, bindparam, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.agent.context import Call
from backend.chat import repository
from backend.chat.history import INTERRUPTED_NOTE
from backend.tasks import registry
from backend.tasks.registry import Action, cap_output

_JSONB_OR_NULL = JSONB(none_as_null=True)  # None is SQL NULL (COALESCE keeps the stored value)

# --- a turn's start, end and failure ----------------------------------------------------
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
         WHERE messages.user_id = :uid AND messages.id IN (:user_row, :reply)
           AND messages.turn_id = :turn
        RETURNING messages.id
    ), orphaned AS (
        INSERT INTO messages (conversation_id, user_id, role, content, tool_calls, items,
                              token_count, item_id, turn_id, status, created_at)
        SELECT c.id, c.user_id, 'assistant', :note, e.call, e.items, e.tokens, :orphan_item_id,
               :turn, 'interrupted', now()
          FROM entry AS e, conversations AS c
         WHERE c.user_id = :uid AND c.id = :cid AND NOT EXISTS (SELECT 1 FROM recorded)
    ), shown AS (
        UPDATE conversations SET listed = true
         WHERE user_id = :uid AND id = :cid AND NOT listed AND EXISTS (SELECT 1 FROM output)
    )
    SELECT text FROM output
"""


_FINISH = text(
    """
    WITH reply AS (
        UPDATE messages
           SET content = :reply_text, tool_calls = :tool_calls, items = :items,
               token_count = :reply_tokens, item = :item, status = 'done'
         WHERE user_id = :uid AND id = :reply AND turn_id = :turn
        RETURNING id
    ), asked AS (
        UPDATE messages SET status = 'done'
         WHERE user_id = :uid AND id = :user_row AND turn_id = :turn
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
         WHERE user_id = :uid AND id IN (:user_row, :reply) AND turn_id = :turn
           AND EXISTS (SELECT 1 FROM messages
                        WHERE user_id = :uid AND id = :reply AND status = 'running')
        RETURNING id, tool_calls
    ), dropped AS (
        DELETE FROM messages
         WHERE user_id = :uid AND id IN (:user_row, :reply) AND turn_id = :turn
           AND status = 'pending'
    ), released AS (
        UPDATE conversations
           SET active_turn = NULL, active_turn_expires_at = NULL,
               updated_at = CASE WHEN EXISTS (SELECT 1 FROM kept) THEN now() ELSE updated_at END
         WHERE user_id = :uid AND id = :cid AND active_turn = :turn
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


def _turn_rows(
    user_id: str, conversation_id: uuid.UUID, turn: uuid.UUID, user_row: int | None, reply_row: int
) -> dict[str, Any]:
    """The parameters naming a turn's rows (a turn that answers a stored message has no user row
    of its own: its reply stands in)."""
    return {
        "cid": conversation_id,
        "uid": user_id,
        "turn": turn,
        "user_row": user_row if user_row is not None else reply_row,
        "reply": reply_row,
    }


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
        **_turn_rows(user_id, conversation_id, turn, user_row, reply_row),
        "reply_text": reply,
        "reply_tokens": reply_tokens,
        "tool_calls": tool_calls or None,
        "items": items or None,
        "item": item,
    }
    await repository.one_row(engine, _FINISH, params)


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
    params = {**_turn_rows(user_id, conversation_id, turn, user_row, reply_row), "note": note}
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


# --- the tool-call statement ------------------------------------------------------------------

_FIELDS = {
    "task_id": "CAST(task.id AS text)",
    "title": "CAST(to_json(task.title) AS text)",
    "description": "COALESCE(CAST(to_json(task.description) AS text), 'null')",
}


def _result_json(action: Action) -> str:
    """SQL for the compact JSON text of a write's result, in the action's key order: the text
    orjson writes for the same dict."""
    parts = []
    for n, key in enumerate(action.result_fields):
        value = f"'\"{action.status}\"'" if key == "status" else _FIELDS[key]
        parts.append(f"'{'{' if n == 0 else ','}\"{key}\":' || {value}")
    return " || ".join(parts) + " || '}'"


# A colon before a word would be a bind parameter to `text()`: hence the split literal.
_OUTPUT = """
    result AS (SELECT {result} AS raw FROM task),
    output AS (
        SELECT CASE WHEN length(raw) <= :max_output THEN raw
                    WHEN length(cut.first) <= :max_output THEN cut.first
                    ELSE cut.short END AS text
          FROM result, LATERAL (
              SELECT '{{"truncated":' || 'true,"output":'
                     || CAST(to_json(left(raw, GREATEST(:max_output - 64, 0))) AS text) || '}}'
                     AS first,
                     '{{"truncated":' || 'true,"output":'
                     || CAST(to_json(left(raw, GREATEST(:max_output - 64, 0) / 6)) AS text)
                     || '}}' AS short
          ) AS cut
    )"""
_GIVEN_OUTPUT = "output(text) AS (SELECT CAST(:output AS text))"


@functools.cache
def _statement(action: Action, change_ctes: str | None, recorded: bool) -> TextClause:
    """Built once per action and shape: the same statement object every call."""
    if change_ctes is None:
        ctes = _GIVEN_OUTPUT
    else:
        ctes = f"{change_ctes}, {_OUTPUT.format(result=_result_json(action))}"
    return text(f"WITH {ctes} " + (_RECORD_TOOL_CALL if recorded else "SELECT text FROM output"))


@dataclass(frozen=True, slots=True)
class Unrecorded:
    """Runs actions for one user outside a turn (MCP's tools, tests): nothing is recorded."""

    engine: AsyncEngine
    """Autocommit (a write is one statement), or a connection's engine in a transaction."""
    user_id: str
    max_tasks: int

    async def run(self, call: Call, max_output: int) -> str:
        """The action's result as JSON text of at most `max_output` characters; a failure
        (unknown task, invalid title...) raises `AppError` and changes nothing."""
        action = registry.ACTIONS[call.name]
        if action.read is not None:
            async with self.engine.connect() as conn:
                result = await action.read(conn, self.user_id, **call.arguments)
            output = orjson.dumps(cap_output(result, max_output)).decode()
            await self.record(call, output)  # after the read, in a statement of its own
            return output
        change = registry.plan(call.name, self.user_id, call.arguments, self.max_tasks)
        params = {**change.params, **self._extra(call), "max_output": max_output}
        statement = _statement(action, change.ctes, self.recorded)
        async with self.engine.connect() as conn:
            written: str | None = (await conn.execute(statement, params)).scalar()
        if written is None:
            raise change.missing
        return written

    async def record(self, call: Call, output: str) -> None:
        """Record a result obtained elsewhere (a read, a remote MCP server's)."""

    @property
    def recorded(self) -> bool:
        return False

    def _extra(self, call: Call) -> dict[str, Any]:
        return {}


@dataclass(frozen=True, slots=True, kw_only=True)
class TurnJournal(Unrecorded):
    """Runs a turn's tool calls and records each in the statement that makes its change."""

    conversation_id: uuid.UUID
    turn: uuid.UUID
    user_row: int | None
    reply_row: int

    @property
    def recorded(self) -> bool:
        return True

    def _extra(self, call: Call) -> dict[str, Any]:
        item = orjson.dumps(call.item).decode()
        return {
            "uid": self.user_id,
            "cid": self.conversation_id,
            "turn": self.turn,
            "user_row": self.user_row if self.user_row is not None else self.reply_row,
            "reply": self.reply_row,
            "tool": call.name,
            "arguments": orjson.dumps(call.arguments).decode(),
            "call_item": item,
            "call_bytes": len(item),
            "call_id": call.item.get("call_id", ""),
            "note": INTERRUPTED_NOTE,
            "orphan_item_id": repository.new_item_id(),
        }

    async def record(self, call: Call, output: str) -> None:
        params = {**self._extra(call), "output": output}
        async with self.engine.connect() as conn:
            await conn.execute(_statement(registry.ACTIONS[call.name], None, True), params)
