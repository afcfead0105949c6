"""The task rules, in one place: the REST router, the agent tools and the MCP tools all call these.

Every function takes the owner's user id (from a verified token) and never touches another
user's rows: an id that exists but belongs to someone else is reported exactly like an unknown one.
Functions flush; the caller's unit of work commits.

A user holds at most `max_tasks_per_user` tasks (read from `session.info`, where the app's session
factories put the MAX_TASKS_PER_USER setting); `create_task` keeps that count exact under
concurrent creates by serialising them per user.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, func, insert, literal, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from backend.errors import Conflict, InvalidInput, NotFound
from backend.tasks.models import Task
from backend.tasks.schemas import TaskStatus
from backend.textrules import clean_text, require_storable
from backend.timeutil import utcnow

TITLE_MAX = 200
DESCRIPTION_MAX = 2000
SEARCH_MAX = 200
MAX_TASKS_PER_USER = 1000
"""The default of the MAX_TASKS_PER_USER setting (used when a session carries no limit)."""
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


def max_tasks(session: AsyncSession) -> int:
    limit = session.info.get("max_tasks_per_user", MAX_TASKS_PER_USER)
    return int(limit)


async def create_task(
    session: AsyncSession, user_id: str, title: Any, description: Any = None
) -> Task:
    """Insert a task unless the user is at the limit (409 `task_limit_reached`).

    Must be the first statement of its unit of work: it needs a real transaction (also on the
    chat path's autocommit engine) so that the per-user lock holds until the insert commits.
    Under READ COMMITTED the insert's count then sees every task committed before the lock.
    """
    values = {"title": clean_title(title), "description": clean_description(description)}
    limit = max_tasks(session)
    if _autocommit(session):  # the lock must be held until the insert commits: a transaction
        await session.connection(execution_options={"isolation_level": "READ COMMITTED"})
    await session.execute(
        select(func.pg_advisory_xact_lock(func.hashtextextended("tasks:" + literal(user_id), 0)))
    )
    owned = select(func.count()).select_from(T).where(T.user_id == user_id).scalar_subquery()
    row = select(literal(user_id), literal(values["title"]), literal(values["description"]))
    result = await session.execute(
        insert(Task)
        .from_select(["user_id", "title", "description"], row.where(owned < limit))
        .returning(Task)
    )
    task = result.scalar_one_or_none()
    if task is None:
        raise TaskLimitReached(limit)
    return task


def _autocommit(session: AsyncSession) -> bool:
    """Whether the session's engine runs each statement in its own transaction. (Asking the
    connection instead would cost a query; switching its isolation level costs CPU per use.)"""
    bind: Any = session.bind
    options = bind.get_execution_options() if bind is not None else {}
    return bool(options.get("isolation_level") == "AUTOCOMMIT")


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


async def list_tasks(
    session: AsyncSession,
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
    session: AsyncSession,
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
    columns = matching.with_only_columns(T.id, T.title, T.description, T.completed, count)
    rows = (await session.execute(columns.order_by(T.id).limit(limit))).all()
    if not rows:
        return [], 0
    return list(rows), rows[0][-1]


async def get_task(session: AsyncSession, user_id: str, task_id: Any) -> Task:
    task_id = _check_id(task_id)
    result = await session.execute(
        select(Task).where(Task.id == task_id, Task.user_id == user_id)  # type: ignore[arg-type]
    )
    task = result.scalar_one_or_none()
    if task is None:
        raise TaskNotFound(task_id)
    return task


async def update_task(
    session: AsyncSession,
    user_id: str,
    task_id: Any,
    *,
    title: Any = _UNSET,
    description: Any = _UNSET,
    completed: Any = _UNSET,
) -> Task:
    values: dict[str, Any] = {}
    if title is not _UNSET:
        values["title"] = clean_title(title)
    if description is not _UNSET:
        values["description"] = clean_description(description)
    if completed is not _UNSET:
        if not isinstance(completed, bool):
            raise InvalidInput("completed", "must be true or false")
        values["completed"] = completed
    task_id = _check_id(task_id)
    if not values:
        return await get_task(session, user_id, task_id)
    values["updated_at"] = utcnow()
    result = await session.execute(
        update(Task)
        .where(Task.id == task_id, Task.user_id == user_id)  # type: ignore[arg-type]
        .values(**values)
        .returning(Task)
        .execution_options(synchronize_session=False)
    )
    task = result.scalar_one_or_none()
    if task is None:
        raise TaskNotFound(task_id)
    return task


async def complete_task(session: AsyncSession, user_id: str, task_id: Any) -> Task:
    return await update_task(session, user_id, task_id, completed=True)


async def delete_task(session: AsyncSession, user_id: str, task_id: Any) -> Task:
    task_id = _check_id(task_id)
    result = await session.execute(
        delete(Task)
        .where(Task.id == task_id, Task.user_id == user_id)  # type: ignore[arg-type]
        .returning(Task)
        .execution_options(synchronize_session=False)
    )
    task = result.scalar_one_or_none()
    if task is None:
        raise TaskNotFound(task_id)
    return task
