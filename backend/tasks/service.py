"""The task rules, in one place: the REST router, the agent tools and the MCP tools all call these.

Every function takes the owner's user id (from a verified token) and never touches another
user's rows: an id that exists but belongs to someone else is reported exactly like an unknown one.
Functions flush; the caller's unit of work commits.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from backend.errors import InvalidInput, NotFound
from backend.tasks.models import Task
from backend.tasks.schemas import TaskStatus
from backend.textrules import clean_text, require_storable
from backend.timeutil import utcnow

TITLE_MAX = 200
DESCRIPTION_MAX = 2000
_UNSET: Any = object()


class TaskNotFound(NotFound):
    code = "task_not_found"

    def __init__(self, task_id: int) -> None:
        super().__init__(f"Task {task_id} not found")
        self.task_id = task_id


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


def _check_id(task_id: Any) -> int:
    # Ids beyond bigint cannot exist; answering 404 beats a database error.
    if not isinstance(task_id, int) or isinstance(task_id, bool) or not 0 < task_id < 2**63:
        raise TaskNotFound(task_id)
    return task_id


async def create_task(
    session: AsyncSession, user_id: str, title: Any, description: Any = None
) -> Task:
    # A plain INSERT ... RETURNING: the ORM unit of work costs more CPU than the statement.
    result = await session.execute(
        insert(Task)
        .values(
            user_id=user_id, title=clean_title(title), description=clean_description(description)
        )
        .returning(Task)
    )
    return result.scalar_one()


async def list_tasks(
    session: AsyncSession, user_id: str, status: TaskStatus | str = TaskStatus.all
) -> list[Task]:
    try:
        status = TaskStatus(status)
    except ValueError:
        raise InvalidInput("status", "must be one of: all, pending, completed") from None
    query = select(Task).where(Task.user_id == user_id)  # type: ignore[arg-type]
    if status is TaskStatus.pending:
        query = query.where(Task.completed.is_(False))  # type: ignore[union-attr,attr-defined]
    elif status is TaskStatus.completed:
        query = query.where(Task.completed.is_(True))  # type: ignore[union-attr,attr-defined]
    result = await session.execute(query.order_by(Task.id))  # type: ignore[arg-type]
    return list(result.scalars())


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
