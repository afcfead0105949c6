"""The task actions, each declared once: what the agent's tools, the MCP server, ChatKit's progress
labels and the offline model offer.

An `Action` holds everything any surface needs: its name, the description and parameter schema
the model and MCP clients read, how it plans its change (a write) or reads (a read), its
progress label and its past-tense verb. Every surface iterates `ACTIONS`; a new action is one
`register(Action(...))` and nothing else.

A write plans a `service.Change` (one statement's CTEs, checked before any SQL: invalid
arguments raise `AppError` here); `chat.journal` composes it with the result the model reads and
the turn's record of the call. A read runs a query and returns its result dict. The user id
always comes from the caller's verified token, never from the arguments.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson

from backend.core.errors import InvalidInput
from backend.tasks import service

LIST_LIMIT = 50
"""A listing gives the model at most this many tasks: the model never gets an unbounded list."""
MAX_OUTPUT_CHARS = 16_000
"""The default of MAX_TOOL_OUTPUT_CHARS: the largest action result (as JSON) a turn keeps."""

Plan = Callable[..., service.Change]
"""(user_id, max_tasks, **arguments) -> the change."""
Read = Callable[..., Awaitable[dict[str, Any]]]
"""(db, user_id, **arguments) -> the result."""


@dataclass(frozen=True, slots=True, eq=False)
class Action:
    """One task action, as every surface offers it (hashed by identity: statements are cached
    per action)."""

    name: str
    description: str
    """What the model and MCP clients read: prompt text."""
    parameters: dict[str, Any]
    """Plain JSON schema (no `$ref`, `$schema` or `additionalProperties`: Gemini refuses them),
    and never a user parameter."""
    progress: str
    """ChatKit's progress label while it runs."""
    verb: str
    """Past tense, for summaries of what was done ("added")."""
    plan: Plan | None = None
    """A write: its change. Exactly one of `plan` and `read` is set."""
    read: Read | None = None
    """A read: its query."""
    result_fields: tuple[str, ...] = field(default=("task_id", "status", "title"))
    """A write's result: these of `task_id`, `status` (= `status`), `title`, `description`."""
    status: str = ""
    """A write's result `status` ("created")."""

    @property
    def required(self) -> list[str]:
        required: list[str] = self.parameters.get("required", [])
        return required

    def arguments(self, given: dict[str, Any]) -> dict[str, Any]:
        """Only this action's own parameters (anything else the model sent is dropped)."""
        allowed = self.parameters.get("properties", {})
        return {k: v for k, v in given.items() if k in allowed}


ACTIONS: dict[str, Action] = {}


def register(action: Action) -> Action:
    if (action.plan is None) == (action.read is None):
        raise ValueError(f"{action.name}: give exactly one of plan and read")
    ACTIONS[action.name] = action
    return action


@contextmanager
def registered(action: Action) -> Iterator[Action]:
    """`action` registered for the duration (tests)."""
    register(action)
    try:
        yield action
    finally:
        ACTIONS.pop(action.name, None)


def plan(name: str, user_id: str, arguments: dict[str, Any], max_tasks: int) -> service.Change:
    """The write action `name` as SQL, checked (invalid arguments raise here, before any SQL).
    Missing or unknown arguments are a TypeError."""
    action = ACTIONS[name]
    assert action.plan is not None, f"{name} is a read"
    return action.plan(user_id, max_tasks, **arguments)


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


def task_view(task: Any) -> dict[str, Any]:
    """A task (or a row with its id, title, description and completed) as the actions show it."""
    return {
        "id": task.id,
        "title": task.title,
        "description": task.description,
        "completed": task.completed,
    }


def list_hint(shown: int, count: int) -> str:
    return (
        f"Only the first {shown} of {count} matching tasks are listed. To find a task, call "
        "list_tasks again with `search` (words from its title) or `status` (pending or "
        "completed), or ask the user which task they mean."
    )


def cap_output(result: dict[str, Any], max_chars: int = MAX_OUTPUT_CHARS) -> dict[str, Any]:
    """`result`, cut so that its JSON is at most `max_chars` characters.

    A task list keeps as many whole tasks as fit (with `count` and a hint to narrow the list);
    any other oversized result becomes a truncated copy of its JSON text (`chat.journal` cuts a
    write's result the same way, in SQL). What the model reads and what is stored with the turn
    are both this capped result.
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
            if len(orjson.dumps(_task_page(result, tasks[:mid], count)).decode()) <= max_chars:
                low = mid
            else:
                high = mid - 1
        capped = _task_page(result, tasks[:low], count)
        if len(orjson.dumps(capped).decode()) <= max_chars:
            return capped
    text, keep = encoded.decode(), max(0, max_chars - 64)
    capped = {"truncated": True, "output": text[:keep]}
    if len(orjson.dumps(capped).decode()) > max_chars:
        # Quotes and control characters grow when the cut text is encoded again (to at most 6
        # characters each): keep a sixth, which always fits.
        capped["output"] = text[: keep // 6]
    return capped


def _task_page(result: dict[str, Any], tasks: list[Any], count: int) -> dict[str, Any]:
    page = {**result, "tasks": tasks, "count": count}
    if count > len(tasks):
        page["hint"] = list_hint(len(tasks), count)
    return page


# --- the five actions -------------------------------------------------------------------------

_TASK_ID = {"type": "integer", "description": "The task's id, as shown by list_tasks."}
_TITLE = {"type": "string", "description": "Short title, 1-200 characters."}


def _object(properties: dict[str, Any], *required: str) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    return schema


async def _list(db: service.Db, user_id: str, status: Any = "all", search: Any = None) -> Any:
    tasks, count = await service.first_tasks(
        db, user_id, status or "all", limit=LIST_LIMIT, search=search
    )
    result: dict[str, Any] = {"tasks": [task_view(t) for t in tasks], "count": count}
    if count > len(tasks):
        result["hint"] = list_hint(len(tasks), count)
    return result


def _add(user_id: str, max_tasks: int, title: Any, description: Any = None) -> service.Change:
    return service.create(user_id, title, description, max_tasks)


def _complete(user_id: str, max_tasks: int, task_id: Any) -> service.Change:
    return service.update(user_id, coerce_task_id(task_id), completed=True)


def _update(
    user_id: str, max_tasks: int, task_id: Any, title: Any = None, description: Any = None
) -> service.Change:
    changes = {k: v for k, v in (("title", title), ("description", description)) if v is not None}
    if not changes:
        raise InvalidInput("title", "give a new title or description")
    return service.update(user_id, coerce_task_id(task_id), **changes)


def _delete(user_id: str, max_tasks: int, task_id: Any) -> service.Change:
    return service.delete(user_id, coerce_task_id(task_id))


register(
    Action(
        name="add_task",
        description="Create a new task for the user. Returns the new task's id and title.",
        parameters=_object(
            {
                "title": _TITLE,
                "description": {
                    "type": "string",
                    "description": "Optional details, up to 2000 characters.",
                },
            },
            "title",
        ),
        progress="Adding a task…",
        verb="added",
        plan=_add,
        status="created",
    )
)
register(
    Action(
        name="list_tasks",
        description=(
            "List the user's tasks with their ids (oldest first, at most 50; `count` says how "
            "many match in all). Use it to find the id of a task named in words."
        ),
        parameters=_object(
            {
                "status": {
                    "type": "string",
                    "enum": ["all", "pending", "completed"],
                    "description": "Which tasks to list (default: all).",
                },
                "search": {
                    "type": "string",
                    "description": "Only tasks whose title contains this text (any case).",
                },
            }
        ),
        progress="Looking at your tasks…",
        verb="listed",
        read=_list,
    )
)
register(
    Action(
        name="complete_task",
        description="Mark a task as completed.",
        parameters=_object({"task_id": _TASK_ID}, "task_id"),
        progress="Completing a task…",
        verb="completed",
        plan=_complete,
        status="completed",
    )
)
register(
    Action(
        name="update_task",
        description="Change a task's title and/or description.",
        parameters=_object(
            {
                "task_id": _TASK_ID,
                "title": {"type": "string", "description": "New title, 1-200 characters."},
                "description": {
                    "type": "string",
                    "description": "New description, up to 2000 characters.",
                },
            },
            "task_id",
        ),
        progress="Updating a task…",
        verb="updated",
        plan=_update,
        status="updated",
        result_fields=("task_id", "status", "title", "description"),
    )
)
register(
    Action(
        name="delete_task",
        description="Delete a task permanently.",
        parameters=_object({"task_id": _TASK_ID}, "task_id"),
        progress="Deleting a task…",
        verb="deleted",
        plan=_delete,
        status="deleted",
    )
)
