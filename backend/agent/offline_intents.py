"""What the offline model understands: plain task requests, read by rules, and the conversation.

`parse(message)` turns the user's words into an `Intent` (tolerant of case, punctuation, polite
padding and a few wordings per request); `read(items)` pulls out of the model input items what a
decision needs: the last user message, the tool calls made since, and the task ids the previous
tool result named. Pure functions over plain dicts, no SDK types; `offline.py` decides and speaks.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from backend.agent.items import text_of

Action = Literal["add", "list", "complete", "rename", "delete", "reopen", "greet", "thanks", "help"]


@dataclass(frozen=True)
class Target:
    """The task a request is about, as the user named it."""

    task_id: int | None = None
    """An id the user typed: "task 3", "#3"."""
    pronoun: bool = False
    """"it", "that one": the single task the previous tool result named."""
    phrase: str = ""
    """Words naming the task ("milk"), matched against titles after a list_tasks."""
    impossible_id: bool = False
    """The user typed a number no task can have (more digits than a task id holds)."""


@dataclass(frozen=True)
class Intent:
    action: Action
    text: str = ""
    """add: the title; rename: the new title (or description)."""
    description: str | None = None
    """add: optional details."""
    status: str = "all"
    """list: all, pending or completed."""
    target: Target = field(default_factory=Target)
    """complete, rename, delete: which task."""
    field: str = "title"
    """rename: the field that changes, "title" or "description"."""


# --- parsing the user's message ------------------------------------------------------------

_NOUN = r"(?:task|todo|to-do|item|reminder|entry)s?"
_GREETING = re.compile(
    r"(?:hi|hello|hey|hiya|howdy|yo|greetings|good (?:morning|afternoon|evening))(?: there)?", re.I
)
_THANKS = re.compile(r"(?:ok(?:ay)?,? )?(?:thanks|thank you|thx|cheers)(?: a lot| so much)?", re.I)
_PREFIX = re.compile(
    r"^(?:(?:hi|hello|hey|ok|okay|so|now|and|also|then|please|pls|kindly|can you|could you|"
    r"would you|will you|i want to|i'd like to|i would like to|i wanna|let's|lets)\b[\s,!.:;-]*)+",
    re.I,
)
_SUFFIX = re.compile(r"[\s,]+(?:please|pls|thanks|thank you)$", re.I)
_RENAME = re.compile(
    r"^(?:rename|retitle|change|update|edit|modify)\s+(?P<target>.+?)\s+(?:to|into|as)\s+(?P<new>.+)$",
    re.I,
)
_FIELD_FIRST = re.compile(
    r"^(?:the\s+)?(title|name|description|details|notes?)\s+(?:of|for|on)\s+(.+)$", re.I
)
_FIELD_LAST = re.compile(r"^(.+?)(?:'s)?\s+(title|name|description|details|notes?)$", re.I)
_DELETE = re.compile(
    r"^(?:delete|remove|drop|erase|trash|discard|cancel|scrap|get rid of|forget about)\s+(?P<target>.+?)"
    rf"(?:\s+(?:from|off)\s+(?:my|the)\s+(?:(?:task|todo|to-do)\s+)?(?:list|{_NOUN}))?$",
    re.I,
)
_COMPLETE = re.compile(
    r"^(?:mark|complete|finish|check off|check|tick off|tick|cross off|cross out|cross|close|"
    r"resolve|(?:i(?:'ve| have)?|just)\s+(?:finished|completed|done|did)|i'm done with|"
    r"i am done with|im done with|done with|finished)\s+(?P<target>.+)$",
    re.I,
)
_DONE_STATEMENT = re.compile(
    r"^(?P<target>.+?)(?:\s+is|\s+are|'s)\s+(?:now\s+)?(?:done|finished|complete|completed)$", re.I
)
_DONE_TAIL = re.compile(r"\s+(?:as\s+)?(?:done|complete|completed|finished|off|out)$", re.I)
_UNDONE_TAIL = re.compile(
    r"\s+as\s+(?:not done|undone|pending|incomplete|not complete|not completed|unfinished|open)$",
    re.I,
)
_ADD = re.compile(
    r"^(?:add|create|new(?=\s+(?:task|todo|to-do|item|reminder)))\b\s*"
    rf"(?:(?:a|an|another|one|new|me)\s+)*(?:{_NOUN}\b)?\s*"
    r"(?:(?:to|for|called|named|titled|saying)\b|[:\-\u2013])?\s*(?P<rest>.*)$",
    re.I,
)
_REMIND = re.compile(
    r"^(?:remind me(?: to)?|remember to|don't forget to|dont forget to|do not forget to)\s+(?P<rest>.+)$",
    re.I,
)
_SOFT_ADD = re.compile(r"^(?:i need to|i have to|i must|i should|i gotta)\s+(?P<rest>.+)$", re.I)
_LIST_TAIL = re.compile(
    rf"\s+(?:to|on|in|onto)\s+(?:my|the)\s+(?:(?:task|todo|to-do)\s+)?(?:list|{_NOUN})$", re.I
)
_DESCRIPTION = re.compile(
    r"\s+(?:with\s+(?:the\s+)?(?:description|details|notes?)|(?:description|details)\s*:)\s*(?P<desc>.+)$",
    re.I,
)
_LIST = re.compile(
    r"\b(?:show|list|display|view|see|what|whats|which|get|give|tell|check|any|how many|read)\b"
    r".*\b(?:tasks?|todos?|to-dos?|list|everything|left|remaining|pending|outstanding|"
    r"completed|done|finished|agenda|to do)\b",
    re.I,
)
_LIST_BARE = re.compile(
    r"^(?:(?:all|my|all my|the)\s+)?(?:(?:completed|done|finished|pending|open|remaining|"
    r"outstanding|unfinished)\s+)?(?:tasks|todos|to-dos|list|task list|todo list|to-do list)$",
    re.I,
)
_PENDING = re.compile(
    r"\b(?:pending|left|remaining|outstanding|open|unfinished|incomplete|still|"
    r"not (?:yet )?(?:done|completed|finished)|to do\b(?!\s*list))\b",
    re.I,
)
_COMPLETED = re.compile(r"\b(?:completed|done|finished|closed|checked off|ticked off)\b", re.I)
_ID = re.compile(
    r"(?:the\s+)?(?:task|item|todo|number|no\.?|id)?\s*(?:number|no\.?|id)?\s*#?\s*(\d+)"
)
_PRONOUNS = frozenset(
    {
        "it",
        "that",
        "this",
        "that one",
        "this one",
        "the task",
        "that task",
        "this task",
        "the last one",
        "the last task",
        "the same one",
        "the same task",
    }
)
_FILLER = frozenset(
    {
        "the",
        "a",
        "an",
        "my",
        "our",
        "this",
        "that",
        "task",
        "tasks",
        "todo",
        "todos",
        "item",
        "items",
        "one",
        "called",
        "named",
        "titled",
        "about",
        "to",
        "for",
        "of",
        "with",
        "entry",
    }
)
_DONE_WORDS = frozenset({"done", "complete", "completed", "finished"})
MAX_ID_DIGITS = 19


def _normalise(text: str) -> str:
    text = re.sub("[\u2018\u2019]", "'", re.sub("[\u201c\u201d]", '"', text))
    return " ".join(text.split()).strip(" .!?")


def _unquote(text: str) -> str:
    return text.strip().strip("\"'`").strip().rstrip(".!?").strip()


def _capitalised(title: str) -> str:
    return title[:1].upper() + title[1:]


def _stem(word: str) -> str:
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


def words(text: str) -> tuple[str, ...]:
    """The words that identify a task: lower-cased, filler dropped, plurals folded."""
    text = re.sub(r"'s\b", "", text.lower())
    return tuple(_stem(w) for w in re.findall(r"[^\W_]+", text) if w not in _FILLER)


def parse_target(text: str) -> Target:
    lowered = _unquote(text).lower()
    if m := _ID.fullmatch(lowered):
        # Task ids fit in 63 bits; longer numbers are not ids (and int() refuses past 4,300 digits).
        if len(m[1].lstrip("0")) > MAX_ID_DIGITS:
            return Target(impossible_id=True)
        return Target(task_id=int(m[1]))
    if lowered in _PRONOUNS:
        return Target(pronoun=True)
    phrase = re.sub(r"^(?:the|my|a|an)\s+", "", lowered)
    return Target(phrase=re.sub(r"\s+(?:task|todo|item|one|entry)$", "", phrase))


def parse(message: str) -> Intent:
    """The user's request; anything not understood is `help`."""
    text = _normalise(message)
    if _GREETING.fullmatch(text.rstrip(",!. ")):
        return Intent("greet")
    if _THANKS.fullmatch(text):
        return Intent("thanks")
    text = _SUFFIX.sub("", _PREFIX.sub("", text)).strip(" .!?,")
    for parser in (_rename, _delete, _complete, _add, _list, _done_statement, _soft_add):
        if (intent := parser(text)) is not None:
            return intent
    return Intent("help")


def _rename(text: str) -> Intent | None:
    if not (m := _RENAME.match(text)):
        return None
    target, field_name = m["target"], "title"
    if f := _FIELD_FIRST.match(target):
        target, field_name = f[2], f[1].lower()
    elif f := _FIELD_LAST.match(target):
        target, field_name = f[1], f[2].lower()
    new = _unquote(m["new"])
    if field_name in ("title", "name"):
        if new.lower() in _DONE_WORDS:
            return Intent("complete", target=parse_target(target))
        return Intent("rename", text=_capitalised(new), target=parse_target(target))
    return Intent("rename", text=new, target=parse_target(target), field="description")


def _delete(text: str) -> Intent | None:
    if m := _DELETE.match(text):
        return Intent("delete", target=parse_target(m["target"]))
    return None


def _complete(text: str) -> Intent | None:
    if not (m := _COMPLETE.match(text)):
        return None
    raw = m["target"]
    if _UNDONE_TAIL.search(raw):
        return Intent("reopen")
    while (stripped := _DONE_TAIL.sub("", raw)) != raw:
        raw = stripped
    target = parse_target(raw)
    if target.phrase and not words(target.phrase):
        return None  # "check my tasks", "finished tasks": a list request
    return Intent("complete", target=target)


def _done_statement(text: str) -> Intent | None:
    if m := _DONE_STATEMENT.match(text):
        return Intent("complete", target=parse_target(m["target"]))
    return None


def _add(text: str) -> Intent | None:
    m = _ADD.match(text) or _REMIND.match(text)
    return _new_task(m["rest"]) if m else None


def _soft_add(text: str) -> Intent | None:
    m = _SOFT_ADD.match(text)
    return _new_task(m["rest"]) if m else None


def _new_task(rest: str) -> Intent:
    description = None
    if m := _DESCRIPTION.search(rest):
        description, rest = _unquote(m["desc"]) or None, rest[: m.start()]
    return Intent(
        "add", text=_capitalised(_unquote(_LIST_TAIL.sub("", rest))), description=description
    )


def _list(text: str) -> Intent | None:
    if not (_LIST.search(text) or _LIST_BARE.match(text)):
        return None
    status = "all"
    if _PENDING.search(text):
        status = "pending"
    elif _COMPLETED.search(text):
        status = "completed"
    return Intent("list", status=status)


# --- reading the conversation ----------------------------------------------------------------


@dataclass
class ToolCall:
    name: str
    arguments: dict[str, Any]
    result: dict[str, Any] | None = None


@dataclass
class Conversation:
    """What the model needs from its input items."""

    message: str
    """The last user message."""
    calls: list[ToolCall]
    """Tool calls made since that message (this turn), with their results once they came back."""
    earlier_ids: list[int]
    """The task ids named by the most recent tool result before that message (for "it")."""


def _is_user(item: Mapping[str, Any]) -> bool:
    return item.get("role") == "user" and item.get("type", "message") == "message"


def _json_object(value: Any) -> dict[str, Any]:
    if isinstance(value, Mapping):
        return dict(value)
    try:
        parsed = json.loads(value if isinstance(value, str) else text_of(value))
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _tool_result(output: Any) -> dict[str, Any]:
    """A tool's output; anything that is not a JSON object (an SDK error text) is an error."""
    result = _json_object(output)
    if result:
        return result
    text = output if isinstance(output, str) else text_of(output)
    return {"error": text.strip() or "the tool returned nothing"}


def _named_ids(name: str, result: dict[str, Any]) -> list[int]:
    if "error" in result or result.get("status") == "deleted":
        return []
    if name == "list_tasks":
        tasks = result.get("tasks")
        return [t["id"] for t in tasks if _has_id(t)] if isinstance(tasks, list) else []
    return [result["task_id"]] if isinstance(result.get("task_id"), int) else []


def _has_id(task: Any) -> bool:
    return isinstance(task, dict) and isinstance(task.get("id"), int)


def read(items: Sequence[Mapping[str, Any]]) -> Conversation:
    last_user = max((i for i, item in enumerate(items) if _is_user(item)), default=-1)
    message = text_of(items[last_user].get("content")) if last_user >= 0 else ""
    by_call_id: dict[str, ToolCall] = {}
    this_turn: list[ToolCall] = []
    earlier: list[int] = []
    for index, item in enumerate(items):
        if item.get("type") == "function_call":
            call = ToolCall(str(item.get("name", "")), _json_object(item.get("arguments")))
            by_call_id[str(item.get("call_id", ""))] = call
            if index > last_user:
                this_turn.append(call)
        elif item.get("type") == "function_call_output":
            found = by_call_id.get(str(item.get("call_id", "")))
            if found is not None:
                found.result = _tool_result(item.get("output"))
                if index < last_user:
                    earlier = _named_ids(found.name, found.result)
    return Conversation(message=message, calls=this_turn, earlier_ids=earlier)


def match_tasks(tasks: Sequence[Mapping[str, Any]], phrase: str) -> list[dict[str, Any]]:
    """Tasks whose title is `phrase` (in words), else those whose title has all of its words."""
    wanted = words(phrase)
    if not wanted:
        return []
    exact = [dict(t) for t in tasks if words(str(t.get("title", ""))) == wanted]
    if exact:
        return exact
    return [dict(t) for t in tasks if set(wanted) <= set(words(str(t.get("title", ""))))]
