"""The five task actions that the chat agent and the MCP server offer, with their result shapes.

Each action runs inside a transaction its caller opened (the agent's tools commit the journal
record of the call in the same one; MCP opens one per call) and returns a JSON-ready dict a
model can read. Failures raise `AppError` (unknown task, invalid title); the agent adapter turns that
into a message for the model, the MCP adapter into an MCP tool error. The user id always comes
from the caller's verified token, never from the tool's arguments.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.errors import InvalidInput
from backend.tasks import service
from backend.tasks.models import Task

Sessions = async_sessionmaker[AsyncSession]

LIST_LIMIT = 50
"""list_tasks gives the model at most this many tasks: the model never gets an unbounded list."""


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


async def add_task(
    session: AsyncSession, user_id: str, title: Any, description: Any = None
) -> dict[str, Any]:
    task = await service.create_task(session, user_id, title, description)
    return {"task_id": task.id, "status": "created", "title": task.title}


async def list_tasks(
    session: AsyncSession, user_id: str, status: Any = "all", search: Any = None
) -> dict[str, Any]:
    """At most LIST_LIMIT tasks, with `count` (all that match) and a `hint` when cut short."""
    tasks, count = await service.first_tasks(
        session, user_id, status or "all", limit=LIST_LIMIT, search=search
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


async def complete_task(session: AsyncSession, user_id: str, task_id: Any) -> dict[str, Any]:
    task = await service.complete_task(session, user_id, coerce_task_id(task_id))
    return {"task_id": task.id, "status": "completed", "title": task.title}


async def update_task(
    session: AsyncSession, user_id: str, task_id: Any, title: Any = None, description: Any = None
) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    if title is not None:
        changes["title"] = title
    if description is not None:
        changes["description"] = description
    if not changes:
        raise InvalidInput("title", "give a new title or description")
    task = await service.update_task(session, user_id, coerce_task_id(task_id), **changes)
    return {
        "task_id": task.id,
        "status": "updated",
        "title": task.title,
        "description": task.description,
    }


async def delete_task(session: AsyncSession, user_id: str, task_id: Any) -> dict[str, Any]:
    task = await service.delete_task(session, user_id, coerce_task_id(task_id))
    return {"task_id": task.id, "status": "deleted", "title": task.title}


ACTIONS: dict[str, Callable[..., Awaitable[dict[str, Any]]]] = {
    "add_task": add_task,
    "list_tasks": list_tasks,
    "complete_task": complete_task,
    "update_task": update_task,
    "delete_task": delete_task,
}


async def run_in_transaction(
    sessions: Sessions, name: str, user_id: str, arguments: dict[str, Any]
) -> dict[str, Any]:
    """One action in its own transaction (MCP's tools; the agent's add a journal record)."""
    async with sessions.begin() as session:
        return await ACTIONS[name](session, user_id, **arguments)
