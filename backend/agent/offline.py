"""The built-in offline model: what the agent runs on when no LLM key is configured.

A few rules, not an LLM (its help text says so), behind the Agents SDK `Model` interface, so the
same `Runner`, tools and streaming paths run as with a real model. It holds no state: each step
comes from the input items alone, that is the last user message (read by the one `PHRASES`
table), the tool calls made since, and the tasks the previous turn's last tool result named
(what "it" means). One tool call per response at most, never the same call twice in a turn.
Its tools and past-tense verbs come from the action registry; its stream events from
`chat_model`, the same ones the real model client sends.
"""

from __future__ import annotations

import itertools
import json
import re
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from agents import Model, ModelResponse
from agents.items import TResponseStreamEvent

from backend.agent import chat_model as events
from backend.agent.items import text_of
from backend.core.config import OFFLINE_MODEL_NAME
from backend.tasks.registry import ACTIONS, Action

HELP = (
    "I'm the built-in offline assistant: a few simple rules, not an AI model, so keep requests "
    'plain. I can add, list, complete, rename and delete your tasks. Try "add a task to buy '
    'milk", "show my tasks", "mark the milk task as done", "rename task 3 to call mom" or '
    '"delete task 3".'
)
MAX_CALLS_PER_TURN = 4
"""More calls than any request needs (three at most): a turn past this is going in circles."""
MAX_ID_DIGITS = 19
"""Task ids fit in 63 bits; a longer number is no task's (and int() refuses past 4,300 digits)."""

# --- what it understands: (an example, its pattern, the intent), the first match wins ---------
# An intent is an action's verb (its `target` group names the task), or greet, thanks.

_T = r"(?P<target>.+?)"  # the task, as the user names it
_ASK = r"(?:show|list|display|view|see|what|what's|whats|which|get|give|tell|any|how many)\b.*\b"
_ALL = r"(?:tasks?|to-?dos?|list|everything|agenda)"
_LIST = r"(?: (?:to|on|onto|from|off) (?:my|the) (?:task |to-?do )?list)?"
_ADD = r"(?:add|create|new(?= task| to-?do| item))(?: (?:a|an|another|new)\b)?(?: (?:task|to-?do|item|reminder)\b)?"
_DONE = r"(?:done|complete|completed|finished)"
# fmt: off
PHRASES: tuple[tuple[str, str, str], ...] = (
    ("hello there", r"(?:hi|hello|hey|good (?:morning|afternoon|evening))(?: there)?", "greet"),
    ("thank you", r"(?:thanks|thank you|thx|cheers)(?: a lot| so much)?", "thanks"),
    ("change the description of task 3 to two litres", rf"(?:change|update|edit|set) (?:the )?(?P<description>description|details|notes?) (?:of|for|on) {_T} to (?P<new>.+)", "updated"),
    ("rename task 2 to call mom", rf"(?:rename|retitle|change|update|edit) {_T} (?:to|into|as) (?P<new>.+)", "updated"),
    ("delete the milk task", rf"(?:delete|remove|drop|erase|trash|cancel|get rid of) {_T}{_LIST}", "deleted"),
    ("mark the milk task as done", rf"(?:mark|complete|finish|tick(?: off)?|check off|cross off|close|(?:i'm |i am )?done with|(?:i |i've |i have |just )?(?:finished|completed|did)) {_T}(?: as)?(?: {_DONE}| off)?", "completed"),
    ("add a task to buy milk", rf"{_ADD}(?: (?:to|called|named|titled|for)\b|:)? ?(?P<title>.*?){_LIST}(?: with (?:the )?(?:description|details|notes?):? (?P<details>.+))?", "added"),
    ("remind me to call mom", r"(?:remind me to|remember to|don't forget to) (?P<title>.+)", "added"),
    ("what's pending", rf"{_ASK}(?P<pending>pending|left|remaining|outstanding|open|unfinished|not done|to do)\b.*", "listed"),
    ("what have I completed", rf"{_ASK}(?P<completed>completed|done|finished)\b.*", "listed"),
    ("show my tasks", rf"{_ASK}{_ALL}\b.*", "listed"),
    ("my tasks", rf"(?:all |my |the )*{_ALL}", "listed"),
    ("the milk task is done", rf"{_T} (?:is|are) (?:now )?{_DONE}", "completed"),
    ("I need to call the bank", r"(?:i need to|i have to|i must|i should) (?P<title>.+)", "added"),
)
# fmt: on
_PATTERNS = [(re.compile(pattern, re.I), intent) for _, pattern, intent in PHRASES]
_POLITE = re.compile(
    r"^(?:(?:ok|okay|so|now|and|also|then|please|pls|kindly|can you|could you|would you|"
    r"will you|i want to|i'd like to|i would like to|let's)\b[\s,!.:;-]*)+|[\s,]+(?:please|pls|thanks|thank you)$",
    re.I,
)
_ID = re.compile(r"(?:the )?(?:task|item|number|no\.?|id)? ?(?:number |no\.? )?#? ?(\d+)", re.I)
_IT = re.compile(r"it|that|this|the task|(?:that|this|the same|the last) (?:one|task)", re.I)
_FILLER = re.compile(
    r"the|an?|my|our|this|that|tasks?|todos?|items?|one|entry|called|named|titled|about|to|for|of|with"
)
_TARGETED = {"completed": "complete", "updated": "rename", "deleted": "delete"}
"""The intents about one task, and how the user says them."""


@dataclass
class Intent:
    verb: str
    arguments: dict[str, Any] = field(default_factory=dict)
    """add: the title (and description); rename: the new title or description; list: status."""
    target: str = ""
    """complete, rename, delete: the task as the user named it ("task 3", "it", "the milk task")."""


def parse(message: str) -> Intent:
    """The user's request; anything not understood is "help"."""
    text = re.sub("[\u2018\u2019]", "'", re.sub("[\u201c\u201d]", '"', message))
    text = _POLITE.sub("", " ".join(text.split()).strip(" .!?")).strip(" .!?,")
    for pattern, verb in _PATTERNS:
        if m := pattern.fullmatch(text):
            return _intent(verb, {k: v for k, v in m.groupdict().items() if v is not None})
    return Intent("help")


def _intent(verb: str, groups: dict[str, str]) -> Intent:
    target = groups.get("target", "").strip(" \"'`")
    if verb == "listed":
        status = next((s for s in ("pending", "completed") if s in groups), "all")
        return Intent(verb, {"status": status})
    if verb == "added":
        arguments = {"title": _title(groups["title"])}
        if groups.get("details"):
            arguments["description"] = groups["details"].strip(" \"'`")
        return Intent(verb, arguments)
    if verb == "updated" and "description" in groups:
        return Intent(verb, {"description": groups["new"].strip(" \"'`")}, target)
    if verb == "updated":
        return Intent(verb, {"title": _title(groups["new"])}, target)
    return Intent(verb, target=target)


def _title(text: str) -> str:
    text = text.strip(" \"'`.!?")
    return text[:1].upper() + text[1:]


def words(text: str) -> tuple[str, ...]:
    """The words that name a task: lower-cased, filler dropped, plurals folded."""
    found = re.findall(r"[^\W_]+", re.sub(r"'s\b", "", text.lower()))
    return tuple(
        w[:-1] if len(w) > 3 and w[-1] == "s" != w[-2] else w
        for w in found
        if not _FILLER.fullmatch(w)
    )


def _phrase(target: str) -> str:
    """The name as the user said it: "the milk task" -> "milk"."""
    phrase = re.sub(r"^(?:the|my|a|an) ", "", target.lower())
    return re.sub(r" (?:task|todo|item|one|entry)$", "", phrase)


def matching(tasks: list[dict[str, Any]], target: str) -> list[dict[str, Any]]:
    """Tasks titled `target` (in words), else those whose title has all of its words."""
    wanted = words(target)
    exact = [t for t in tasks if words(str(t.get("title", ""))) == wanted]
    return exact or [t for t in tasks if set(wanted) <= set(words(str(t.get("title", ""))))]


# --- deciding ----------------------------------------------------------------------------------

Step = tuple[Action, dict[str, Any]] | str
"""A tool call (the action and its arguments), or the reply."""


@dataclass
class Call:
    name: str
    arguments: dict[str, Any]
    result: dict[str, Any] | None = None


def _by_verb(verb: str) -> Action:
    return next(action for action in ACTIONS.values() if action.verb == verb)


def _object(value: Any) -> dict[str, Any]:
    try:
        parsed = value if isinstance(value, Mapping) else json.loads(value or "null")
    except (TypeError, ValueError):
        return {}
    return dict(parsed) if isinstance(parsed, Mapping) else {}


def read(items: list[Mapping[str, Any]]) -> tuple[str, list[Call], list[int]]:
    """The last user message, the calls made since, and the task ids named before it."""
    users = [i for i, item in enumerate(items) if item.get("role") == "user"]
    message = text_of(items[users[-1]].get("content")) if users else ""
    calls: dict[str, Call] = {}
    this_turn: list[Call] = []
    earlier: list[int] = []
    for index, item in enumerate(items):
        call_id = str(item.get("call_id"))
        if item.get("type") == "function_call":
            calls[call_id] = call = Call(str(item.get("name")), _object(item.get("arguments")))
            if not users or index > users[-1]:
                this_turn.append(call)
        elif item.get("type") == "function_call_output" and call_id in calls:
            output = item.get("output")
            result = _object(output) or {"error": text_of(output).strip() or str(output)}
            calls[call_id].result = result
            if users and index < users[-1]:  # what "it" means: the tasks this result named
                listed = result.get("tasks")
                tasks = listed if isinstance(listed, list) else [result]
                ids = [t.get("id", t.get("task_id")) for t in tasks if isinstance(t, dict)]
                gone = "error" in result or result.get("status") == "deleted"
                earlier = [] if gone else [i for i in ids if type(i) is int]
    return message, this_turn, earlier


def decide(items: list[Mapping[str, Any]], available: set[str]) -> Step:
    message, calls, earlier = read(items)
    intent = parse(message)
    done = [call for call in calls if call.result is not None]
    step = _after(intent, done[-1]) if done else _first(intent, earlier)
    if isinstance(step, str):
        return step
    action, arguments = step
    if action.name not in available:
        return f"I can't do that here: the {action.name} tool is not available."
    repeated = any(c.name == action.name and c.arguments == arguments for c in calls)
    if repeated or len(calls) >= MAX_CALLS_PER_TURN:
        return "I stopped here rather than repeat myself." + (
            f" {_report(done[-1])}" if done else ""
        )
    return step


def _first(intent: Intent, earlier: list[int]) -> Step:
    if intent.verb == "added" and not intent.arguments["title"]:
        return "What should the task say? For example: add a task to buy milk."
    if intent.verb in ("added", "listed"):
        return _by_verb(intent.verb), intent.arguments
    if intent.verb not in _TARGETED:
        return {"greet": f"Hello! {HELP}", "thanks": "You're welcome!"}.get(intent.verb, HELP)
    if intent.verb == "updated" and not any(intent.arguments.values()):
        return "What should the new title be? For example: rename task 3 to call mom."
    if m := _ID.fullmatch(intent.target):
        if len(m[1].lstrip("0")) > MAX_ID_DIGITS:
            return 'I couldn\'t find that task: no task has that number. Say "show my tasks" to see them.'
        return _by_verb(intent.verb), {"task_id": int(m[1]), **intent.arguments}
    it = _IT.fullmatch(intent.target)
    if it and len(earlier) == 1:
        return _by_verb(intent.verb), {"task_id": earlier[0], **intent.arguments}
    if re.match(r"(?:all|every|everything|them all)\b", intent.target, re.I):
        return f"I can only {_TARGETED[intent.verb]} one task at a time. Which one?"
    if it or not words(intent.target):
        return 'Which task do you mean? Tell me its number, or say "show my tasks".'
    return _by_verb("listed"), {"status": "all"}  # to find the named task's id


def _after(intent: Intent, last: Call) -> Step:
    """A tool result came back: look the named task up in it, or report."""
    result, action = last.result or {}, ACTIONS.get(last.name)
    if "error" in result:
        what = "your tasks" if action and action.read else "that task"
        error = str(result["error"]).rstrip(".")
        return f"Sorry, I couldn't {last.name.split('_')[0]} {what}: {error}."
    if not (action and action.read and intent.verb in _TARGETED):
        return _report(last)
    tasks = [
        t for t in result.get("tasks") or () if isinstance(t, dict) and type(t.get("id")) is int
    ]
    count = result["count"] if isinstance(result.get("count"), int) else len(tasks)
    searched = "search" in last.arguments
    if count > len(tasks) and not searched and not matching(tasks, intent.target):
        # Look again among the titles that hold the name's longest word.
        return action, {"status": "all", "search": max(words(intent.target), key=len)}
    phrase, matches = _phrase(intent.target), matching(tasks, intent.target)
    if intent.verb == "completed":
        open_ = [t for t in matches if not t.get("completed")]
        if len(matches) == 1 and not open_:
            return f"'{matches[0]['title']}' (task {matches[0]['id']}) is already done."
        if matches and not open_:
            return f"Every task matching '{phrase}' is already done."
        matches = open_
    if not matches:
        found = f"\n{format_tasks(tasks, 'all', count)}" if tasks else " You have no tasks."
        return f"I couldn't find a task matching '{phrase}'.{'' if searched else found}"
    if len(matches) > 1:
        options = "\n".join(f"- #{t['id']} {t['title']}" for t in matches)
        example = f"{_TARGETED[intent.verb]} task {matches[0]['id']}"
        return (
            f"Several tasks match '{phrase}'; which one do you mean?\n{options}\n"
            f'Tell me its number, e.g. "{example}".'
        )
    return _by_verb(intent.verb), {"task_id": matches[0]["id"], **intent.arguments}


def _report(call: Call) -> str:
    """The reply after a tool call that went well."""
    result, action = call.result or {}, ACTIONS.get(call.name)
    if action is None:
        return "Done."
    if action.read:
        tasks = [t for t in result.get("tasks") or () if isinstance(t, dict)]
        count = result.get("count") if isinstance(result.get("count"), int) else None
        return format_tasks(tasks, str(call.arguments.get("status", "all")), count)
    title, task_id = result.get("title", ""), result.get("task_id", "?")
    if action.verb == "completed":
        return f"Marked '{title}' (task {task_id}) as done."
    if action.verb == "updated" and "title" in call.arguments:
        return f"Renamed task {task_id} to '{title}'."
    if action.verb == "updated":
        return f"Updated the description of '{title}' (task {task_id})."
    return f"{action.verb.capitalize()} '{title}' (task {task_id})."


def format_tasks(tasks: list[dict[str, Any]], status: str, count: int | None = None) -> str:
    """The task list as text; `count` (all that match) when the list is only the first ones."""
    if not tasks:
        return f"You have no {status + ' ' if status != 'all' else ''}tasks."
    heading = f"Your {status} tasks" if status != "all" else "Your tasks"
    lines = [
        f"- #{t.get('id')} {t.get('title')} — {'✓ done' if t.get('completed') else 'pending'}"
        for t in tasks
    ]
    if count is None or count <= len(tasks):
        return f"{heading} ({len(tasks)}):\n" + "\n".join(lines)
    return (
        f"{heading} (the first {len(tasks)} of {count}):\n" + "\n".join(lines) + "\nTo find one, "
        'name it ("mark the milk task as done") or use its number, or say "show my pending tasks".'
    )


# --- speaking: one output item per response, as the SDK's events -------------------------------


def respond(
    system_instructions: str | None,
    input: Any,
    model_settings: Any,
    tools: list[Any],
    *_: Any,
    **__: Any,
) -> tuple[Any, dict[str, int]]:
    """This call's output item (a function call or the reply) and its usage (in word counts)."""
    items = [{"role": "user", "content": input}] if isinstance(input, str) else input
    items = [i if isinstance(i, Mapping) else i.model_dump(exclude_unset=True) for i in items]
    step = decide(items, {str(getattr(tool, "name", "")) for tool in tools})
    item: Any
    if isinstance(step, str):
        item, said = events.message_item(step, f"msg_{uuid.uuid4().hex}"), step
    else:
        said = json.dumps(step[1], ensure_ascii=False)
        item = events.call_item(f"call_{uuid.uuid4().hex}", step[0].name, said)
    seen = [text_of(i.get("content")) + str(i.get("arguments", i.get("output", ""))) for i in items]
    read_, written = _count(" ".join([system_instructions or "", *seen])), _count(said)
    return item, {
        "prompt_tokens": read_,
        "completion_tokens": written,
        "total_tokens": read_ + written,
    }


def _count(text: str) -> int:
    """A rough token count (words and punctuation), so usage logs show plausible numbers."""
    return len(re.findall(r"\w+|[^\w\s]", text))


class OfflineModel(Model):
    """Rule-based stand-in for an LLM. It holds no state: one instance serves every run."""

    name = OFFLINE_MODEL_NAME

    async def get_response(self, *args: Any, **kwargs: Any) -> ModelResponse:
        item, usage = respond(*args, **kwargs)
        return ModelResponse([item], events.usage_of(usage), f"resp_{uuid.uuid4().hex}")

    async def stream_response(
        self, *args: Any, **kwargs: Any
    ) -> AsyncIterator[TResponseStreamEvent]:  # type: ignore[override]
        item, usage = respond(*args, **kwargs)
        seq = itertools.count()
        if item.type == "message":  # the SDK reads the item's start, its text deltas, the end
            yield events.message_started(item.id, next(seq))
            for chunk in re.findall(r"\S+\s*|\s+", item.content[0].text):
                yield events.text_delta(item.id, chunk, next(seq))
        yield events.completed(OFFLINE_MODEL_NAME, [item], usage, next(seq))
