"""The task rules, in one place: the REST router, the agent tools and the MCP tools all call these.

Every function takes the owner's user id (from a verified token) and never touches another
user's rows: a task id is looked up among the caller's own tasks only (not found otherwise).
A write is a `Change` (one statement), run by `apply` or inside a larger statement.

A task's id is its number in its user's own sequence (1, 2, 3...; a deleted number is not
reused): "task 1" is a different task for every user, and every statement names the user
(`user_id`, the first column of every key: the schema can be distributed by user).

A user holds at most MAX_TASKS_PER_USER tasks (the caller passes the setting to `create`),
exact under concurrent creates: the user's row in `task_counts` moves in the same statement as
the insert or delete (see `Change`), and gives the new task its number.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from backend.core.errors import AppError, Conflict, InvalidInput, NotFound
from backend.core.text import clean_text, require_storable
from backend.tasks.models import Task
from backend.tasks.schemas import TaskStatus

Db = AsyncSession | AsyncConnection
"""Where the functions run: a session (in a transaction) or an autocommit connection. A write
is one statement either way."""

TITLE_MAX = 200
DESCRIPTION_MAX = 2000
SEARCH_MAX = 200
MAX_TASKS_PER_USER = 1000
"""The default of the MAX_TASKS_PER_USER setting."""
MAX_TASK_ID = 2**63 - 1
_UNSET: Any = object()
T: Any = Task


class TaskNotFound(NotFound):
    code = "task_not_found"

    def __init__(self, task_id: Any) -> None:
        # Never format an arbitrary int: past 4,300 digits str() raises instead of answering 404.
        shown = task_id if isinstance(task_id, int) and abs(task_id) <= MAX_TASK_ID else None
        super().__init__("No task has that id" if shown is None else f"Task {shown} not found")
        self.task_id = shown


class TaskLimitReached(Conflict):
    code = "task_limit_reached"

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"You already have {limit} tasks, the most one account can hold; "
            "delete or complete-and-delete some before adding more"
        )
        self.limit = limit


def clean_title(title: Any) -> str:
    if not isinstance(title, str):
        raise InvalidInput("title", "must be a string")
    return clean_text("title", title, TITLE_MAX)


def clean_description(description: Any) -> str | None:
    if description is None:
        return None
    if not isinstance(description, str):
        raise InvalidInput("description", "must be a string")
    description = description.strip()
    if len(description) > DESCRIPTION_MAX:
        raise InvalidInput("description", f"must be at most {DESCRIPTION_MAX} characters")
    return require_storable("description", description) or None


def clean_search(search: Any) -> str | None:
    if search is None:
        return None
    if not isinstance(search, str):
        raise InvalidInput("search", "must be a string")
    search = " ".join(search.split())
    if len(search) > SEARCH_MAX:
        raise InvalidInput("search", f"must be at most {SEARCH_MAX} characters")
    return require_storable("search", search) or None


def _check_id(task_id: Any) -> int:
    # Ids beyond bigint cannot exist; answering 404 beats a database error.
    if not isinstance(task_id, int) or isinstance(task_id, bool) or not 0 < task_id <= MAX_TASK_ID:
        raise TaskNotFound(task_id)
    return task_id


@dataclass(frozen=True, slots=True)
class Change:
    """One task change as SQL: common table expressions, the one named `task` returning the
    changed task's row (`_ROW_COLUMNS`: its number as `id`), or nothing when `missing` applies.

    `apply` runs it as a statement of its own; the agent's tools put more CTEs after it (the
    action's result, the turn journal's record), so that the change and its record are one
    statement: atomic without a transaction, one round trip.
    """

    ctes: str
    params: dict[str, Any]
    missing: AppError


# `number AS id`: the id clients see is the task's number in its user's sequence.
_ROW_COLUMNS = "id, user_id, title, description, completed, created_at, updated_at"
_TASK_COLUMNS = _ROW_COLUMNS.replace("id", "number AS id", 1)

# The count row is locked by the upsert, and a concurrent create re-checks the limit against
# the committed count after waiting: exact under any concurrency, without a second statement.
# The same row hands out the number (the last one plus one), so no two creates take the same.
_CREATE = f"""
    slot AS (
        INSERT INTO task_counts AS c (user_id, tasks, last_number) VALUES (:uid, 1, 1)
        ON CONFLICT (user_id) DO UPDATE SET tasks = c.tasks + 1, last_number = c.last_number + 1
         WHERE c.tasks < :task_limit
        RETURNING last_number
    ), task AS (
        INSERT INTO tasks (user_id, number, title, description)
        SELECT :uid, slot.last_number, :title, :description FROM slot
        RETURNING {_TASK_COLUMNS}
    )"""
_UPDATE = f"""
    task AS (
        UPDATE tasks
           SET title = CASE WHEN :set_title THEN CAST(:title AS varchar) ELSE title END,
               description = CASE WHEN :set_description THEN CAST(:description AS text)
                                  ELSE description END,
               completed = CASE WHEN :set_completed THEN CAST(:completed AS boolean)
                                ELSE completed END,
               updated_at = now()
         WHERE user_id = :uid AND number = :task_id
        RETURNING {_TASK_COLUMNS}
    )"""
_DELETE = f"""
    task AS (
        DELETE FROM tasks WHERE user_id = :uid AND number = :task_id RETURNING {_TASK_COLUMNS}
    ), uncounted AS (
        UPDATE task_counts SET tasks = tasks - 1
         WHERE user_id = :uid AND EXISTS (SELECT 1 FROM task)
    )"""


def create(user_id: str, title: Any, description: Any, limit: int) -> Change:
    """A new task, unless the user already holds `limit` (409 `task_limit_reached`)."""
    values = {"title": clean_title(title), "description": clean_description(description)}
    return Change(_CREATE, {"uid": user_id, "task_limit": limit, **values}, TaskLimitReached(limit))


def update(
    user_id: str,
    task_id: Any,
    *,
    title: Any = _UNSET,
    description: Any = _UNSET,
    completed: Any = _UNSET,
) -> Change:
    """Set what is given (a None description clears it); `updated_at` moves even if nothing
    else does."""
    params: dict[str, Any] = {"uid": user_id, "title": None, "description": None, "completed": None}
    if title is not _UNSET:
        params["title"] = clean_title(title)
    if description is not _UNSET:
        params["description"] = clean_description(description)
    if completed is not _UNSET and not isinstance(completed, bool):
        raise InvalidInput("completed", "must be true or false")
    if completed is not _UNSET:
        params["completed"] = completed
    params["set_title"] = title is not _UNSET
    params["set_description"] = description is not _UNSET
    params["set_completed"] = completed is not _UNSET
    params["task_id"] = _check_id(task_id)
    return Change(_UPDATE, params, TaskNotFound(task_id))


def delete(user_id: str, task_id: Any) -> Change:
    task_id = _check_id(task_id)
    return Change(_DELETE, {"uid": user_id, "task_id": task_id}, TaskNotFound(task_id))


@functools.cache
def _alone(ctes: str) -> Any:
    return text(f"WITH {ctes} SELECT {_ROW_COLUMNS} FROM task")


async def apply(db: Db, change: Change) -> Any:
    """Run `change` on its own; the changed task's row (attributes as on `Task`)."""
    row = (await db.execute(_alone(change.ctes), change.params)).first()
    if row is None:
        raise change.missing
    return row


def _status(status: TaskStatus | str) -> TaskStatus:
    try:
        return TaskStatus(status)
    except ValueError:
        raise InvalidInput("status", "must be one of: all, pending, completed") from None


def _matching(user_id: str, status: TaskStatus | str, search: Any) -> Any:
    query = select(T).where(T.user_id == user_id)
    status = _status(status)
    if status is TaskStatus.pending:
        query = query.where(T.completed.is_(False))
    elif status is TaskStatus.completed:
        query = query.where(T.completed.is_(True))
    if (words := clean_search(search)) is not None:
        query = query.where(T.title.icontains(words, autoescape=True))
    return query


async def page(
    session: Db,
    user_id: str,
    status: TaskStatus | str = TaskStatus.all,
    *,
    limit: int = 200,
    after: int | None = None,
    search: Any = None,
) -> tuple[list[Task], int | None]:
    """Oldest first, `limit` at most; `after` is the last id of the previous page.

    Returns the page and the cursor of the next one (None at the end).
    """
    query = _matching(user_id, status, search)
    if after is not None:
        query = query.where(T.id > after)
    rows = list((await session.execute(query.order_by(T.id).limit(limit + 1))).scalars())
    next_cursor = rows[limit - 1].id if len(rows) > limit else None
    return rows[:limit], next_cursor


async def first_tasks(
    session: Db,
    user_id: str,
    status: TaskStatus | str = TaskStatus.all,
    *,
    limit: int,
    search: Any = None,
) -> tuple[list[Any], int]:
    """The first `limit` matching tasks (oldest first) and how many match in all, in one query.

    The count is a sub-select rather than `count(*) OVER ()`, which would read every matching
    row in full (up to MAX_TASKS_PER_USER rows of 2 KB) to return the first few.
    """
    matching = _matching(user_id, status, search)
    count = select(func.count()).select_from(matching.subquery()).scalar_subquery()
    # Plain rows, not Task objects: building 50 ORM objects cost more CPU than the query.
    columns = matching.with_only_columns(
        T.id.label("id"), T.title, T.description, T.completed, count
    )
    rows = (await session.execute(columns.order_by(T.id).limit(limit))).all()
    if not rows:
        return [], 0
    return list(rows), rows[0][-1]


async def get_task(session: Db, user_id: str, task_id: Any) -> Task:
    task_id = _check_id(task_id)
    result = await session.execute(
        select(Task).where(Task.user_id == user_id, Task.id == task_id)  # type: ignore[arg-type]
    )
    task = result.scalar_one_or_none()
    if task is None:
        raise TaskNotFound(task_id)
    return task
