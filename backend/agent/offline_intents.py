"""What the offline model understands: plain task requests, parsed with a few patterns.

`plan(history)` looks at the conversation (model input items) and returns the next step:
tool calls to make, or the text to answer. It is stateless: everything it needs is in the items.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from backend.agent.items import text_of

HELP = (
    "I'm the built-in offline assistant (rule-based, not an AI model). I can add, list, "
    'complete, rename and delete your tasks. Try "add a task to buy milk", "show my tasks", '
    '"show completed tasks", "mark the milk task as done", "rename task 3 to call mom" or '
    '"delete the milk task".'
)


@dataclass
class Step:
    """The next thing to do: call tools, or answer with text."""

    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    text: str = ""


_ID = r"(?:task\s*)?#?(\d+)"
_ADD = re.compile(
    r"^(?:please\s+)?(?:add|create|new|remind me to|remember to|i need to)\b\s*(?:a\s+)?(?:new\s+)?(?:task|todo|to-do|item)?\s*(?:to|:|-|called|named)?\s*(.+)$",
    re.I,
)
_LIST = re.compile(
    r"\b(show|list|what|see|display|view|get)\b.*\b(tasks?|todos?|list|to-dos?|left|pending|completed|done)\b",
    re.I,
)
_COMPLETE = re.compile(
    r"^(?:please\s+)?(?:mark|complete|finish|check off|tick off|close|i (?:have )?(?:finished|completed|done))\b\s*(?:the\s+)?(.*?)(?:\s+(?:task|todo|item))?\s*(?:as\s+)?(?:done|complete|completed|finished)?$",
    re.I,
)
_RENAME = re.compile(
    r"^(?:please\s+)?(?:rename|change|update|retitle|edit)\s+(?:the\s+)?(.+?)\s+(?:to|as|into)\s+(.+)$",
    re.I,
)
_DELETE = re.compile(
    r"^(?:please\s+)?(?:delete|remove|drop|cancel|get rid of)\s+(?:the\s+)?(.+)$", re.I
)
_GREETING = re.compile(r"^(hi|hello|hey|yo|good (morning|afternoon|evening)|howdy)\b", re.I)
_FILLER = {
    "the",
    "a",
    "an",
    "my",
    "task",
    "tasks",
    "todo",
    "item",
    "called",
    "named",
    "one",
    "please",
}
_PRONOUNS = {"it", "that", "this", "that one", "this one", "that task", "this task"}


def _clean(text: str) -> str:
    return text.strip().strip(".!?\"'").strip()


def _capitalised(title: str) -> str:
    return title[:1].upper() + title[1:]


def _words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in _FILLER}


@dataclass
class _Turn:
    """The current turn: the user's words and the tool results received since."""

    message: str
    results: list[tuple[str, dict[str, Any], dict[str, Any]]]  # (tool, arguments, result)
    earlier_task_ids: list[int]


def _read(items: list[Any]) -> _Turn:
    last_user = max((i for i, it in enumerate(items) if it.get("role") == "user"), default=-1)
    message = text_of(items[last_user].get("content")) if last_user >= 0 else ""
    calls: dict[str, tuple[str, dict[str, Any]]] = {}
    results = []
    earlier: list[int] = []
    for index, item in enumerate(items):
        kind = item.get("type")
        if kind == "function_call":
            try:
                args = json.loads(item.get("arguments") or "{}")
            except ValueError:
                args = {}
            calls[item.get("call_id", "")] = (item.get("name", ""), args)
        elif kind == "function_call_output":
            name, args = calls.get(item.get("call_id", ""), ("", {}))
            try:
                output = json.loads(item.get("output") or "{}")
            except (TypeError, ValueError):
                output = {}
            if index > last_user:
                results.append((name, args, output))
            else:
                earlier = _task_ids(output) or earlier
    return _Turn(message=_clean(message), results=results, earlier_task_ids=earlier)


def _task_ids(output: dict[str, Any]) -> list[int]:
    if isinstance(output.get("task_id"), int):
        return [output["task_id"]]
    if isinstance(output.get("tasks"), list):
        return [
            t["id"] for t in output["tasks"] if isinstance(t, dict) and isinstance(t.get("id"), int)
        ]
    return []


def _format_list(tasks: list[dict[str, Any]], status: str) -> str:
    if not tasks:
        return {
            "completed": "You have no completed tasks.",
            "pending": "You have no pending tasks.",
        }.get(status, "You have no tasks.")
    label = {"completed": "Your completed tasks", "pending": "Your pending tasks"}.get(
        status, "Your tasks"
    )
    lines = [
        f"- #{t['id']} {t['title']} {'✓ done' if t.get('completed') else '(pending)'}"
        for t in tasks
    ]
    return f"{label}:\n" + "\n".join(lines)


_DONE_TEXT = {
    "add_task": "Added '{title}' (task {task_id}).",
    "complete_task": "Marked '{title}' (task {task_id}) as done.",
    "update_task": "Renamed task {task_id} to '{title}'.",
    "delete_task": "Deleted '{title}' (task {task_id}).",
}


def _after_results(turn: _Turn) -> Step:
    name, args, result = turn.results[-1]
    if "error" in result:
        return Step(text=f"Sorry, I couldn't do that: {result['error']}.")
    if name in _DONE_TEXT:
        return Step(text=_DONE_TEXT[name].format(**result))
    if name == "list_tasks":
        return _after_list(turn, result.get("tasks", []), args.get("status", "all"))
    return Step(text="Done.")


def _after_list(turn: _Turn, tasks: list[dict[str, Any]], status: str) -> Step:
    """A list came back: either it was what the user asked for, or we were finding a task."""
    action, words, new_title = _action_on_named_task(turn.message)
    if action is None:
        return Step(text=_format_list(tasks, status))
    matches = [t for t in tasks if words and words <= _words(t["title"])]
    if not matches:
        matches = [t for t in tasks if words & _words(t["title"])]
    if not matches:
        return Step(
            text=f"I couldn't find a task matching '{' '.join(sorted(words))}'.\n"
            + _format_list(tasks, "all")
        )
    if len(matches) > 1:
        options = "\n".join(f"- #{t['id']} {t['title']}" for t in matches)
        return Step(text=f"Several tasks match; which one do you mean?\n{options}")
    args: dict[str, Any] = {"task_id": matches[0]["id"]}
    if action == "update_task":
        args["title"] = new_title
    return Step(calls=[(action, args)])


def _action_on_named_task(message: str) -> tuple[str | None, set[str], str]:
    """For "mark the milk task as done" style requests: the tool and the words naming the task."""
    if m := _RENAME.match(message):
        return "update_task", _words(m.group(1)), _capitalised(_clean(m.group(2)))
    if m := _DELETE.match(message):
        return "delete_task", _words(m.group(1)), ""
    if m := _COMPLETE.match(message):
        return "complete_task", _words(m.group(1)), ""
    return None, set(), ""


def _explicit_id(target: str, turn: _Turn) -> int | None:
    target = _clean(target).lower()
    if m := re.fullmatch(_ID, target):
        return int(m.group(1))
    if target in _PRONOUNS and len(turn.earlier_task_ids) == 1:
        return turn.earlier_task_ids[0]
    return None


def plan(items: list[Any]) -> Step:
    turn = _read(items)
    if turn.results:
        return _after_results(turn)
    message = turn.message
    if not message:
        return Step(text=HELP)
    if m := _RENAME.match(message):
        task_id = _explicit_id(m.group(1), turn)
        title = _capitalised(_clean(m.group(2)))
        if task_id is not None:
            return Step(calls=[("update_task", {"task_id": task_id, "title": title})])
        return Step(calls=[("list_tasks", {"status": "all"})])
    if m := _DELETE.match(message):
        task_id = _explicit_id(m.group(1), turn)
        if task_id is not None:
            return Step(calls=[("delete_task", {"task_id": task_id})])
        return Step(calls=[("list_tasks", {"status": "all"})])
    if (m := _COMPLETE.match(message)) and not _LIST.search(message):
        task_id = _explicit_id(m.group(1), turn)
        if task_id is not None:
            return Step(calls=[("complete_task", {"task_id": task_id})])
        if _words(m.group(1)):
            return Step(calls=[("list_tasks", {"status": "pending"})])
    if (m := _ADD.match(message)) and _clean(m.group(1)):
        return Step(calls=[("add_task", {"title": _capitalised(_clean(m.group(1)))})])
    if _LIST.search(message):
        lowered = message.lower()
        status = "all"
        if re.search(r"\b(completed|done|finished)\b", lowered):
            status = "completed"
        elif re.search(r"\b(pending|left|open|remaining|todo|to do)\b", lowered):
            status = "pending"
        return Step(calls=[("list_tasks", {"status": status})])
    if _GREETING.match(message):
        return Step(text="Hello! " + HELP)
    return Step(text=HELP)
