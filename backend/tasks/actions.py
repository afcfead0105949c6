"""The five task actions that the chat agent and the MCP server offer, with their result shapes.

A write action (add, complete, update, delete) is one SQL statement: the task change (from
`tasks.service`) and the action's result, built as JSON text by the same statement from the
changed row. Run alone (`run`: MCP, one statement in its transaction), or with the turn
journal's record of the call added to that statement (the agent's tools): the change and its
record then commit together in one round trip, and what the model reads is byte for byte what
the journal keeps. The read (list_tasks) is a query; its result is built here.

Failures raise `AppError` (unknown task, invalid title); the agent adapter turns that into a
message for the model, the MCP adapter into an MCP tool error. The user id always comes from the
caller's verified token, never from the tool's arguments.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import TextClause, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.errors import AppError, InvalidInput
from backend.tasks import service
from backend.tasks.models import Task

Sessions = async_sessionmaker[AsyncSession]

LIST_LIMIT = 50
"""list_tasks gives the model at most this many tasks: the model never gets an unbounded list."""
MAX_OUTPUT_CHARS = 16_000
"""The default of MAX_TOOL_OUTPUT_CHARS: the largest action result (as JSON) a turn keeps."""


def task_view(task: Task | Any) -> dict[str, Any]:
    """A task (or a row with its id, title, description and completed) as the tools show it."""
    return {
        "id": task.id,
        "title": task.title,
        "description": task.description,
        "completed": task.completed,
    }


def coerce_task_id(value: Any) -> int:
    """Models send ids as 5, 5.0 or "5"; anything else is not a task id.

    Strings must be ASCII digits ("٣" or "²" are not ids); ids no task can have (beyond bigint)
    are "not found" before any big-number conversion can fail.
    """
    if isinstance(value, bool):
        raise InvalidInput("task_id", "must be an integer task id")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    elif isinstance(value, str):
        digits = value.strip().lstrip("#")
        if not (digits.isascii() and digits.isdigit()):
            raise InvalidInput("task_id", "must be an integer task id")
        if len(digits.lstrip("0")) > len(str(service.MAX_TASK_ID)):
            raise service.TaskNotFound(None)
        value = int(digits)
    if not isinstance(value, int):
        raise InvalidInput("task_id", "must be an integer task id")
    if not 0 < value <= service.MAX_TASK_ID:
        raise service.TaskNotFound(value)
    return value


async def list_tasks(
    db: service.Db, user_id: str, status: Any = "all", search: Any = None
) -> dict[str, Any]:
    """At most LIST_LIMIT tasks, with `count` (all that match) and a `hint` when cut short."""
    tasks, count = await service.first_tasks(
        db, user_id, status or "all", limit=LIST_LIMIT, search=search
    )
    result: dict[str, Any] = {"tasks": [task_view(t) for t in tasks], "count": count}
    if count > len(tasks):
        result["hint"] = list_hint(len(tasks), count)
    return result


def list_hint(shown: int, count: int) -> str:
    return (
        f"Only the first {shown} of {count} matching tasks are listed. To find a task, call "
        "list_tasks again with `search` (words from its title) or `status` (pending or "
        "completed), or ask the user which task they mean."
    )


def cap_output(result: dict[str, Any], max_chars: int = MAX_OUTPUT_CHARS) -> dict[str, Any]:
    """`result`, cut so that its JSON is at most `max_chars` characters.

    A task list keeps as many whole tasks as fit (with `count` and a hint to narrow the list);
    any other oversized result becomes a truncated copy of its JSON text. What the model reads
    and what is stored with the turn are both this capped result.
    """
    encoded = orjson.dumps(result)
    if len(encoded) <= max_chars:  # bytes >= characters: a cheap, safe first check
        return result
    if len(encoded.decode()) <= max_chars:
        return result
    tasks = result.get("tasks")
    if isinstance(tasks, list):
        count = result.get("count", len(tasks))
        count = count if isinstance(count, int) else len(tasks)
        low, high = 0, len(tasks)  # the most tasks that fit: binary search on the JSON length
        while low < high:
            mid = (low + high + 1) // 2
            trial = _task_page(result, tasks[:mid], count)
            if len(orjson.dumps(trial).decode()) <= max_chars:
                low = mid
            else:
                high = mid - 1
        capped = _task_page(result, tasks[:low], count)
        if len(orjson.dumps(capped).decode()) <= max_chars:
            return capped
    text = encoded.decode()
    return {"truncated": True, "output": text[: max(0, max_chars - 64)]}


def _task_page(result: dict[str, Any], tasks: list[Any], count: int) -> dict[str, Any]:
    page = {**result, "tasks": tasks, "count": count}
    if count > len(tasks):
        page["hint"] = list_hint(len(tasks), count)
    return page


def _json_object(**fields: str) -> str:
    """SQL for the compact JSON text of an object whose values are SQL expressions yielding JSON
    text, in the given key order: the same text orjson writes for the dict."""
    parts = [
        f"'{'{' if n == 0 else ','}\"{key}\":' || {value}"
        for n, (key, value) in enumerate(fields.items())
    ]
    return " || ".join(parts) + " || '}'"


def _result(status: str, description: bool = False) -> str:
    fields = {
        "task_id": "CAST(task.id AS text)",
        "status": f"'\"{status}\"'",
        "title": "CAST(to_json(task.title) AS text)",
    }
    if description:
        fields["description"] = "COALESCE(CAST(to_json(task.description) AS text), 'null')"
    return _json_object(**fields)


# A write's result, from its `task` row, and `output`: that text, or past :max_output characters
# the truncated form `cap_output` gives any oversized result that is not a task list. (A colon
# before a word would be a bind parameter to `text()`: hence the split literal.)
_OUTPUT = """
    result AS (SELECT {result} AS raw FROM task),
    output AS (
        SELECT CASE WHEN length(raw) <= :max_output THEN raw
                    ELSE '{{"truncated":' || 'true,"output":'
                         || CAST(to_json(left(raw, GREATEST(:max_output - 64, 0))) AS text) || '}}'
               END AS text
          FROM result
    )"""


GIVEN_OUTPUT = "output(text) AS (SELECT CAST(:output AS text))"
"""`output` for a result known before the statement (a read's, or one from a remote MCP server)."""


@dataclass(frozen=True, slots=True)
class Write:
    """A write action as one statement's CTEs: the task change, then `output(text)`, the
    action's result as JSON text (what the model reads, capped at `:max_output` characters)."""

    ctes: str
    params: dict[str, Any]
    missing: AppError
    """Raised when the change found no task (unknown id) or made none (at the limit)."""


@functools.cache
def _ctes(change: str, status: str, description: bool) -> str:
    """Built once per action: the same string object every call (and its hash, cached)."""
    return f"{change}, {_OUTPUT.format(result=_result(status, description))}"


def _write(change: service.Change, status: str, description: bool = False) -> Write:
    return Write(_ctes(change.ctes, status, description), change.params, change.missing)


def _add(user_id: str, max_tasks: int, title: Any, description: Any = None) -> Write:
    return _write(service.create(user_id, title, description, max_tasks), "created")


def _complete(user_id: str, max_tasks: int, task_id: Any) -> Write:
    change = service.update(user_id, coerce_task_id(task_id), completed=True)
    return _write(change, "completed")


def _update(
    user_id: str, max_tasks: int, task_id: Any, title: Any = None, description: Any = None
) -> Write:
    changes: dict[str, Any] = {}
    if title is not None:
        changes["title"] = title
    if description is not None:
        changes["description"] = description
    if not changes:
        raise InvalidInput("title", "give a new title or description")
    change = service.update(user_id, coerce_task_id(task_id), **changes)
    return _write(change, "updated", description=True)


def _delete(user_id: str, max_tasks: int, task_id: Any) -> Write:
    return _write(service.delete(user_id, coerce_task_id(task_id)), "deleted")


WRITES: dict[str, Callable[..., Write]] = {
    "add_task": _add,
    "complete_task": _complete,
    "update_task": _update,
    "delete_task": _delete,
}
READS = {"list_tasks": list_tasks}


def plan(name: str, user_id: str, arguments: dict[str, Any], max_tasks: int) -> Write | None:
    """The write action `name` as SQL (checked: invalid arguments raise here, before any SQL);
    None for a read. Unknown arguments are a TypeError."""
    if name in READS:
        return None
    return WRITES[name](user_id, max_tasks, **arguments)


@functools.cache
def statement(ctes: str) -> TextClause:
    """`ctes` (which define `output`) as a statement of their own, returning the output."""
    return text(f"WITH {ctes} SELECT text FROM output")


async def run(
    db: service.Db,
    name: str,
    user_id: str,
    arguments: dict[str, Any],
    *,
    max_tasks: int = service.MAX_TASKS_PER_USER,
    max_output_chars: int = MAX_OUTPUT_CHARS,
) -> str:
    """One action for `user_id` on `db`: its result as JSON text of at most `max_output_chars`.

    A write is one statement (atomic on an autocommit connection too); failures raise `AppError`.
    """
    write = plan(name, user_id, arguments, max_tasks)
    if write is None:
        result = await READS[name](db, user_id, **arguments)
        return orjson.dumps(cap_output(result, max_output_chars)).decode()
    params = {**write.params, "max_output": max_output_chars}
    output: str | None = (await db.execute(statement(write.ctes), params)).scalar()
    if output is None:
        raise write.missing
    return output


async def run_in_transaction(
    sessions: Sessions,
    name: str,
    user_id: str,
    arguments: dict[str, Any],
    *,
    max_tasks: int = service.MAX_TASKS_PER_USER,
    max_output_chars: int = MAX_OUTPUT_CHARS,
) -> dict[str, Any]:
    """One action in its own transaction, its result as a dict (MCP's tools)."""
    async with sessions.begin() as session:
        output = await run(
            session,
            name,
            user_id,
            arguments,
            max_tasks=max_tasks,
            max_output_chars=max_output_chars,
        )
    result: dict[str, Any] = orjson.loads(output)
    return result
