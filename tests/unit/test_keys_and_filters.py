"""The schema can be distributed by user (Citus, docs/distribution.md) without a rewrite.

Two rules, checked without a database:
- every table is per user: its primary key, each unique index or constraint and each foreign key
  include `user_id` (a foreign key on both sides, so related rows live on the same shard);
- every statement the repository modules send names the user for each per-user table it reads
  or writes: a `user_id` condition in the clause that reads, updates or deletes it (a join on
  `user_id` counts), `user_id` among an insert's columns and in its ON CONFLICT target.
The statements are the modules' SQL constants, the statements their functions compose (the turn
journal's tool-call statement with each action's change), and what each repository function
sends to a recording connection. The checker is tested on statements that break each rule.
"""

from __future__ import annotations

import contextlib
import inspect
import re
import uuid
from collections.abc import Awaitable, Callable, Iterator
from types import ModuleType
from typing import Any

import pytest
from sqlalchemy import (
    Column,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    TextClause,
    UniqueConstraint,
)
from sqlalchemy.dialects import postgresql

from backend.agent.context import Call
from backend.chat import claim, journal, repository
from backend.reliability import idempotency, ratelimit
from backend.server.tables import metadata
from backend.tasks import registry, service

MODULES: list[ModuleType] = [service, journal, claim, repository, idempotency, ratelimit]
PER_USER = {name for name, table in metadata.tables.items() if "user_id" in table.c}

CROSS_USER = {
    repository._PURGE_UNLISTED.text: "sweeps abandoned conversations of every user",
    idempotency._PURGE.text: "sweeps expired idempotency keys of every user",
}
"""Maintenance sweeps that are meant to touch every user's rows: on Citus they run on every
shard (a multi-shard DELETE). Nothing a request sends is here."""


# --- keys ---------------------------------------------------------------------------------


def key_problems(meta: MetaData) -> list[str]:
    """What keeps `meta`'s tables from being distributed by `user_id`."""
    problems = []
    for name, table in meta.tables.items():
        if "user_id" not in table.c:
            problems.append(f"{name}: no user_id column")
            continue
        if "user_id" not in table.primary_key.columns:
            problems.append(f"{name}: primary key {list(table.primary_key.columns.keys())}")
        for constraint in table.constraints:
            if isinstance(constraint, UniqueConstraint) and "user_id" not in constraint.columns:
                problems.append(f"{name}: unique {list(constraint.columns.keys())}")
            if isinstance(constraint, ForeignKeyConstraint):
                pairs = {(e.parent.name, e.column.name) for e in constraint.elements}
                if ("user_id", "user_id") not in pairs:
                    problems.append(f"{name}: foreign key {sorted(pairs)} without user_id")
        for index in table.indexes:
            if index.unique and "user_id" not in index.columns:
                problems.append(f"{name}: unique index {index.name}")
    return sorted(problems)


def test_every_table_is_per_user_and_every_key_includes_user_id() -> None:
    assert set(metadata.tables) == PER_USER
    assert key_problems(metadata) == []


def test_primary_keys_start_with_user_id() -> None:
    for name, table in metadata.tables.items():
        assert next(iter(table.primary_key.columns.keys())) == "user_id", name
    assert list(metadata.tables["tasks"].primary_key.columns.keys()) == ["user_id", "number"]


def test_the_key_check_finds_global_keys() -> None:
    meta = MetaData()
    Table("things", meta, Column("id", Integer, primary_key=True), Column("user_id", String))
    Table(
        "parts",
        meta,
        Column("user_id", String, primary_key=True),
        Column("id", Integer, primary_key=True),
        Column("thing_id", Integer),
        Column("code", String),
        ForeignKeyConstraint(["thing_id"], ["things.id"]),
        UniqueConstraint("code"),
        Index("ix_parts_code", "code", unique=True),
    )
    Table("globals", meta, Column("id", Integer, primary_key=True))
    assert key_problems(meta) == [
        "globals: no user_id column",
        "parts: foreign key [('thing_id', 'id')] without user_id",
        "parts: unique ['code']",
        "parts: unique index ix_parts_code",
        "things: primary key ['id']",
    ]


# --- statements ---------------------------------------------------------------------------

_REFERENCE = re.compile(
    r"\b(?P<kw>FROM|JOIN|UPDATE|INTO)\s+(?P<table>\w+)(?:\s+(?:AS\s+)?(?P<alias>\w+))?"
    r"|,\s*(?P<listed>\w+)\s+(?:AS\s+)?(?P<listed_alias>\w+)",
    re.IGNORECASE,
)
_KEYWORDS = {
    "as", "set", "where", "on", "join", "left", "right", "inner", "cross", "full", "group",
    "order", "limit", "returning", "using", "values", "select", "union", "from", "lateral",
}  # fmt: skip


def _group_end(sql: str, start: int) -> int:
    """Where the parenthesized group around `start` closes (or the statement ends)."""
    depth = 0
    for i in range(start, len(sql)):
        if sql[i] == "(":
            depth += 1
        elif sql[i] == ")":
            if depth == 0:
                return i
            depth -= 1
    return len(sql)


def _flat(sql: str) -> str:
    """`sql` without its nested groups: their conditions filter something else."""
    out, depth = [], 0
    for ch in sql:
        if ch == "(":
            depth += 1
            if depth == 1:
                out.append("(")
        elif ch == ")":
            depth -= 1
            if depth == 0:
                out.append(")")
        elif depth == 0:
            out.append(ch)
    return "".join(out)


def filter_problems(sql: str) -> list[str]:
    """Each reference to a per-user table in `sql` that does not name the user."""
    problems = []
    for m in _REFERENCE.finditer(sql):
        table = m["table"] or m["listed"]
        alias = m["alias"] if m["table"] else m["listed_alias"]
        if table not in PER_USER or (m["listed"] and alias.lower() == "from"):
            continue  # a CTE, a column list ("user_id, tasks FROM ...")
        if alias is None or alias.lower() in _KEYWORDS:
            alias = table
        scope = sql[m.start() : _group_end(sql, m.end())]
        where = f"at {m.start()}: {' '.join(m[0].split())}"
        if m["kw"] and m["kw"].upper() == "INTO":
            columns = re.match(r"\s*\(([^)]*)\)", sql[m.end() :])
            if columns is None or "user_id" not in re.split(r"\W+", columns[1]):
                problems.append(f"{where}: insert without user_id")
            conflict = re.search(r"ON CONFLICT\s*\(([^)]*)\)", scope, re.IGNORECASE)
            if conflict and "user_id" not in re.split(r"\W+", conflict[1]):
                problems.append(f"{where}: ON CONFLICT ({conflict[1]}) without user_id")
            continue
        names = rf"(?:(?:{re.escape(alias)}|{re.escape(table)})\.)?user_id"
        condition = rf"(?<![\w.]){names}\s*(?:=|IN\b)|=\s*\w+\.user_id\b|=\s*user_id\b"
        if not re.search(condition, _flat(scope), re.IGNORECASE):
            problems.append(f"{where}: no user_id condition")
    return problems


def _text(statement: Any) -> str:
    if isinstance(statement, TextClause):
        return statement.text
    if isinstance(statement, str):
        return statement
    return str(statement.compile(dialect=postgresql.dialect()))


def _constants() -> Iterator[tuple[str, str]]:
    for module in MODULES:
        for name, value in vars(module).items():
            if isinstance(value, TextClause | str) and _REFERENCE.search(_text(value)):
                yield f"{module.__name__}.{name}", _text(value)


_ARGUMENTS = {"title": "x", "task_id": 1, "description": "d"}


def _arguments(action: registry.Action) -> dict[str, Any]:
    arguments = {k: _ARGUMENTS[k] for k in action.required}
    if action.name == "update_task":
        arguments["title"] = "x"  # it needs a change
    return arguments


def _changes() -> Iterator[tuple[registry.Action, service.Change]]:
    for action in registry.ACTIONS.values():
        if action.plan is not None:
            yield action, registry.plan(action.name, "u", _arguments(action), 10)


def _composed() -> Iterator[tuple[str, str]]:
    for action, change in _changes():
        yield f"service._alone({action.name})", _text(service._alone(change.ctes))
        for recorded in (False, True):
            statement = journal._statement(action, change.ctes, recorded)
            yield f"journal._statement({action.name}, {recorded})", _text(statement)
    reads = [a for a in registry.ACTIONS.values() if a.read is not None]
    for action in reads:
        yield (
            f"journal._statement({action.name}, record)",
            _text(journal._statement(action, None, True)),
        )


class _Result:
    rowcount = 0

    def first(self) -> None:
        return None

    def all(self) -> list[Any]:
        return []

    def scalar(self) -> None:
        return None

    def scalars(self) -> list[Any]:
        return []

    def scalar_one_or_none(self) -> None:
        return None

    def one(self) -> Any:
        raise LookupError("no rows in a recording")


class Recording:
    """An engine, connection and session at once: records each statement and its parameters."""

    def __init__(self) -> None:
        self.sent: list[tuple[Any, dict[str, Any]]] = []

    def connect(self) -> Recording:
        return self

    async def __aenter__(self) -> Recording:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def execute(self, statement: Any, params: dict[str, Any] | None = None) -> _Result:
        self.sent.append((statement, params or {}))
        return _Result()


U = "alice"
CID = uuid.uuid4()
TURN = uuid.uuid4()
_LIST_TASKS = Call("list_tasks", {}, {"call_id": "c1"})
_START = {
    "user_id": U,
    "conversation_id": CID,
    "title": None,
    "turn": TURN,
    "lock_seconds": 60,
    "user_content": "hi",
    "user_tokens": 1,
    "user_item_id": None,
    "user_item": None,
    "reply_item_id": None,
    "adopt": False,
    "max_messages": 10,
    "token_budget": 1000,
    "max_active": 2,
}
_TURN = {"user_id": U, "conversation_id": CID, "turn": TURN, "user_row": 1, "reply_row": 2}
_ITEM = {"user_id": U, "conversation_id": CID, "item_id": "msg_1"}

Run = Callable[[Recording], Awaitable[Any]]
CALLS: dict[str, list[Run]] = {
    "repository.one_row": [
        lambda e: repository.one_row(e, repository._GET_CONVERSATION, {"cid": CID, "uid": U})
    ],
    "repository.get_conversation": [
        lambda e: repository.get_conversation(e, user_id=U, conversation_id=CID)
    ],
    "repository.list_conversations": [
        lambda e: repository.list_conversations(e, user_id=U, limit=5, after=None),
        lambda e: repository.list_conversations(e, user_id=U, limit=5, after=CID),
    ],
    "repository.rename_conversation": [
        lambda e: repository.rename_conversation(e, user_id=U, conversation_id=CID, title="t")
    ],
    "repository.delete_conversation": [
        lambda e: repository.delete_conversation(e, user_id=U, conversation_id=CID)
    ],
    "repository.save_thread": [
        lambda e: repository.save_thread(
            e, user_id=U, conversation_id=CID, title=None, created_at=0
        )
    ],
    "repository.purge_unlisted": [repository.purge_unlisted],
    "repository.list_messages": [
        lambda e: repository.list_messages(e, user_id=U, conversation_id=CID, limit=5),
        lambda e: repository.list_messages(e, user_id=U, conversation_id=CID, limit=5, after_id=3),
        lambda e: repository.list_messages(
            e, user_id=U, conversation_id=CID, limit=5, after_item="msg_1", descending=True
        ),
    ],
    "repository.load_message": [lambda e: repository.load_message(e, **_ITEM)],
    "repository.upsert_message": [
        lambda e: repository.upsert_message(e, **_ITEM, role="user", content="c", tokens=1, item={})
    ],
    "repository.delete_message": [lambda e: repository.delete_message(e, **_ITEM)],
    "repository.delete_after_message": [lambda e: repository.delete_after_message(e, **_ITEM)],
    "journal.finish_turn": [
        lambda e: journal.finish_turn(
            e, **_TURN, reply="r", reply_tokens=1, tool_calls=None, items=None
        )
    ],
    "journal.interrupt_turn": [
        lambda e: journal.interrupt_turn(e, **_TURN, created=True),
        lambda e: journal.interrupt_turn(e, **_TURN, created=False),
    ],
    "journal.recorded_turn": [lambda e: journal.recorded_turn(e, user_id=U, turn=TURN)],
    "claim.start_turn": [
        lambda e: claim.start_turn(e, **{**_START, "create": True}),
        lambda e: claim.start_turn(e, **{**_START, "create": False}),
    ],
    "service.apply": [lambda e, c=change: service.apply(e, c) for _, change in _changes()],
    "service.page": [
        lambda e: service.page(e, U, "pending", after=3, search="milk"),
    ],
    "service.first_tasks": [
        lambda e: service.first_tasks(e, U, "completed", limit=5, search="milk")
    ],
    "service.get_task": [lambda e: service.get_task(e, U, 1)],
}


def _journals(engine: Recording) -> list[journal.Unrecorded]:
    turn = {"conversation_id": CID, "turn": TURN, "user_row": 1, "reply_row": 2}
    return [
        journal.Unrecorded(engine, U, 10),
        journal.TurnJournal(engine, U, 10, **turn),
    ]


async def _sent() -> list[tuple[str, str, dict[str, Any], Any]]:
    """(which call, SQL, parameters, statement) for everything the functions send."""
    sent = []
    for name, runs in CALLS.items():
        for run in runs:
            engine = Recording()
            with contextlib.suppress(Exception):  # no rows: "not found", after the statement
                await run(engine)
            sent += [(name, _text(s), p, s) for s, p in engine.sent]
    for action, _ in _changes():
        for actions in _journals(engine := Recording()):
            call = Call(action.name, _arguments(action), {"call_id": "c"})
            with contextlib.suppress(Exception):  # no rows: "not found"
                await actions.run(call, 1000)
        sent += [(f"journal.run({action.name})", _text(s), p, s) for s, p in engine.sent]
    for actions in _journals(engine := Recording()):
        await actions.record(_LIST_TASKS, "{}")
    sent += [("journal.record(list_tasks)", _text(s), p, s) for s, p in engine.sent]
    return sent


def test_every_repository_function_is_exercised() -> None:
    public = {
        f"{module.__name__.rsplit('.', 1)[1]}.{name}"
        for module in (service, journal, claim, repository)
        for name, value in vars(module).items()
        if inspect.iscoroutinefunction(value)
        and value.__module__ == module.__name__
        and not name.startswith("_")
    }
    assert public == set(CALLS)


def test_every_constant_statement_names_the_user() -> None:
    found = dict(_constants())
    assert {"backend.chat.journal._RECORD_TOOL_CALL", "backend.tasks.service._CREATE"} <= set(found)
    problems = {
        name: filter_problems(sql)
        for name, sql in found.items()
        if sql not in CROSS_USER and filter_problems(sql)
    }
    assert problems == {}


def test_every_composed_statement_names_the_user() -> None:
    problems = {name: filter_problems(sql) for name, sql in _composed() if filter_problems(sql)}
    assert problems == {}


async def test_every_statement_sent_names_the_user_and_gets_its_parameters() -> None:
    sent = await _sent()
    assert set(CALLS) <= {name for name, *_ in sent}  # each call sent something
    problems = {}
    for name, sql, params, statement in sent:
        if sql in CROSS_USER:
            continue
        if found := filter_problems(sql):
            problems[name] = found
        if isinstance(statement, TextClause):
            missing = set(statement._bindparams) - set(params)
            if missing:
                problems[name] = [f"parameters not given: {sorted(missing)}"]
    assert problems == {}


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE messages SET status = 'done' WHERE id = :reply AND turn_id = :turn",
        "DELETE FROM tasks WHERE number = :task_id",
        "SELECT * FROM conversations c WHERE c.id = :cid",
        # the filter is on the other table of the join only
        "SELECT * FROM conversations c JOIN messages m ON m.conversation_id = c.id "
        "WHERE c.user_id = :uid",
        # a filter inside a subquery does not filter the outer table
        "DELETE FROM messages WHERE id > (SELECT id FROM messages WHERE user_id = :uid)",
        "WITH t AS (UPDATE tasks SET completed = true WHERE number = 1 RETURNING 1) "
        "SELECT * FROM t",
        "SELECT 1 FROM entry AS e, conversations AS c WHERE c.id = :cid",
        "INSERT INTO tasks (number, title) VALUES (1, 'x')",
        "INSERT INTO messages AS m (user_id, item_id) VALUES (:uid, :i) "
        "ON CONFLICT (item_id) DO NOTHING",
    ],
)
def test_the_filter_check_finds_a_statement_without_the_user(sql: str) -> None:
    assert filter_problems(sql) != []


def test_the_filter_check_passes_a_statement_that_names_the_user() -> None:
    sql = (
        "SELECT * FROM conversations c JOIN messages m ON m.user_id = c.user_id "
        "AND m.conversation_id = c.id WHERE c.id = :cid AND c.user_id = :uid"
    )
    assert filter_problems(sql) == []
    assert filter_problems("SELECT user_id, tasks FROM task_counts WHERE user_id = :u") == []
