"""The built-in offline model, which the agent runs on when no LLM key is configured: a few rules
(its help says it is no AI model) behind the SDK's `Model` interface, stateless, with one tool call
per response at most and never the same one twice a turn. It reads the user's message with the one
`PHRASES` table; actions and verbs come from the registry, stream events from `events` (shared with the model client).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from agents import Model, ModelResponse
from agents.items import TResponseStreamEvent as Event

from backend.agent import events
from backend.agent.items import text_of
from backend.core.config import OFFLINE_MODEL_NAME
from backend.tasks.registry import ACTIONS, Action

HELP = (
    "I'm the built-in offline assistant: a few simple rules, not an AI model, so keep requests "
    'plain. I can add, list, complete, rename and delete your tasks. Try "add a task to buy '
    'milk", "show my tasks", "mark the milk task as done", "rename task 3 to call mom" or '
    '"delete task 3".'
)
_NO_ID = 'I couldn\'t find that task: no task has that number. Say "show my tasks" to see them.'

# --- what it understands: (an example, its pattern, the intent); the first match wins ---------
# Intents: an action's verb, or thanks (else: the help line). Groups: `target` names the task,
# `title` and `description` are arguments, `pending` or `completed` is the list's status.
# fmt: off
_T = r"(?P<target>.+?)"
_ASK = r"(?:show|list|display|view|see|what(?:'?s)?|which|get|give|tell|check|any|how many)\b.*\b"
_ALL = r"(?:tasks?|to-?dos?|list|everything|agenda)"
_LIST = r"(?: (?:to|on|onto|from|off) (?:my|the) (?:task |to-?do )?list)?"
PHRASES: tuple[tuple[str, str, str], ...] = (
    ("thank you", r"(?:thanks|thank you|thx|cheers)(?: a lot| so much)?", "thanks"),
    ("my pending tasks", r"(?:all |my |the )*(?:(?P<pending>pending|open) |"
        rf"(?P<completed>completed|done) )?(?:to-?do |task )?{_ALL}", "listed"),
    ("change the description of task 3 to two litres", r"(?:change|update|edit|set) (?:the )?"
        rf"(?:description|details|notes?) (?:of|for|on) {_T} to (?P<description>.+)", "updated"),
    ("rename task 2 to call mom",
        rf"(?:rename|retitle|change|update|edit) {_T} (?:to|into|as) (?P<title>.+)", "updated"),
    ("delete the milk task",
        rf"(?:delete|remove|drop|erase|trash|cancel|get rid of) {_T}{_LIST}", "deleted"),
    ("mark the milk task as done", r"(?:mark|complete|finish|tick(?: off)?|check off|cross off|"
        r"close|(?:i'm |i am )?done with|(?:i |i've |i have |just )?(?:finished|completed|did)) "
        rf"{_T}(?: as)?(?: done| complete| completed| finished| off)?", "completed"),
    ("add a task to buy milk", r"(?:add|create|new(?= task| to-?do| item))(?: (?:a|an|another|"
        r"new)\b)?(?: (?:task|to-?do|item|reminder)\b)?(?: (?:to|called|named|titled|for)\b|:)? ?"
        rf"(?P<title>.*?){_LIST}(?: with (?:the )?(?:description|details|notes?):? "
        r"(?P<description>.+))?", "added"),
    ("remind me to call mom", r"(?:remind me|remember|don't forget) to (?P<title>.+)", "added"),
    ("what's pending", rf"{_ASK}(?P<pending>pending|left|remaining|outstanding|open|unfinished|"
        r"not done|to do)\b.*", "listed"),
    ("what have I completed", rf"{_ASK}(?P<completed>completed|done|finished)\b.*", "listed"),
    ("show my tasks", rf"{_ASK}{_ALL}\b.*", "listed"),
    ("milk is done", rf"{_T} (?:is|are) (?:now )?(?:done|finished|completed?)", "completed"),
    ("I need to call the bank", r"(?:i need to|i have to|i must|i should) (?P<title>.+)", "added"),
)
_POLITE = re.compile(r"^(?:(?:ok|okay|so|now|and|also|then|please|pls|kindly|can you|could you|"
    r"would you|will you|i want to|i'd like to|i would like to|let's)\b[\s,!.:;-]*)+"
    r"|[\s,]+(?:please|pls|thanks|thank you)$", re.I)
_FILLER = re.compile(r"the|an?|my|our|this|that|tasks?|todos?|items?|one|entry|called|named|titled|"
    r"about|to|for|of|with")
# fmt: on
_PATTERNS = [(re.compile(pattern, re.I), intent) for _, pattern, intent in PHRASES]
_ID = re.compile(r"(?:the )?(?:task|item|number|no\.?|id)? ?(?:number |no\.? )?#? ?(\d+)", re.I)
_IT = re.compile(r"it|that|this|the task|(?:that|this|the same|the last) (?:one|task)", re.I)
_VERBS = {action.verb: action for action in ACTIONS.values()}  # "added": the add action, …
_STATE = ("pending", "✓ done")
_TOKENS = re.compile(r"\w+|[^\w\s]")  # a rough token count: words and punctuation
_TARGETED = {"completed": "complete", "updated": "rename", "deleted": "delete"}  # about one task


class Intent(NamedTuple):
    verb: str
    arguments: dict[str, Any]
    target: str = ""  # the task as the user named it ("task 3", "it", "the milk task")


def parse(message: str) -> Intent:
    """The user's request; anything not understood is "help"."""
    text = re.sub("[\u2018\u2019]", "'", re.sub("[\u201c\u201d]", '"', message))
    text = _POLITE.sub("", " ".join(text.split()).strip(" .!?")).strip(" .!?,")
    for pattern, verb in _PATTERNS:
        if m := pattern.fullmatch(text):
            found = {k: v.strip(" \"'`.!?") for k, v in m.groupdict().items() if v is not None}
            target = found.pop("target", "")
            found.update({k: v[:1].upper() + v[1:] for k, v in found.items() if k == "title"})
            if verb == "listed":
                found = {"status": next((s for s in ("pending", "completed") if s in found), "all")}
            return Intent(verb, found, target)
    return Intent("help", {})


def words(text: str) -> tuple[str, ...]:
    """The words that name a task: lower-cased, filler dropped, plurals folded."""
    found = re.findall(r"[^\W_]+", re.sub(r"'s\b", "", text.lower()))
    stem = [w[:-1] if len(w) > 3 and w[-1] == "s" != w[-2] else w for w in found]
    return tuple(w for w, raw in zip(stem, found, strict=True) if not _FILLER.fullmatch(raw))


def matching(tasks: list[dict[str, Any]], target: str) -> list[dict[str, Any]]:
    """Tasks titled `target` (in words), else those whose title has all of its words."""
    wanted = words(target)
    exact = [t for t in tasks if words(str(t.get("title", ""))) == wanted]
    return exact or [t for t in tasks if set(wanted) <= set(words(str(t.get("title", ""))))]


# --- deciding ----------------------------------------------------------------------------------

Step = tuple[Action, dict[str, Any]] | str  # a tool call (action, arguments), or the reply


@dataclass
class Call:
    name: str
    arguments: dict[str, Any]
    result: dict[str, Any] | None = None


def _object(value: Any) -> dict[str, Any]:
    with contextlib.suppress(TypeError, ValueError):
        value = value if isinstance(value, Mapping) else json.loads(value or "null")
    return dict(value) if isinstance(value, Mapping) else {}


def _listed(result: dict[str, Any]) -> tuple[list[dict[str, Any]], int]:
    """A listing's tasks, and how many match in all."""
    tasks = [t for t in result.get("tasks") or () if type(t) is dict and type(t.get("id")) is int]
    return tasks, result["count"] if type(result.get("count")) is int else len(tasks)


def read(items: list[Mapping[str, Any]]) -> tuple[str, list[Call], list[int]]:
    """The last user message, the calls made since, and the task ids named before it."""
    last = max((i for i, item in enumerate(items) if item.get("role") == "user"), default=-1)
    message = text_of(items[last].get("content")) if last >= 0 else ""
    calls: dict[str, Call] = {}
    this_turn: list[Call] = []
    earlier: list[int] = []
    for index, item in enumerate(items):
        call_id = str(item.get("call_id"))
        if item.get("type") == "function_call":
            calls[call_id] = call = Call(str(item.get("name")), _object(item.get("arguments")))
            if index > last:
                this_turn.append(call)
        elif item.get("type") == "function_call_output" and call_id in calls:
            result = _object(out := item.get("output")) or {"error": text_of(out) or str(out)}
            calls[call_id].result = result
            if index < last:  # what "it" means: the tasks this result named
                ids = [t["id"] for t in _listed(result)[0]] or [result.get("task_id")]
                earlier = [i for i in ids if type(i) is int and result.get("status") != "deleted"]
    return message, this_turn, earlier


def decide(items: list[Mapping[str, Any]], available: set[str]) -> Step:
    message, calls, earlier = read(items)
    intent = parse(message)
    done = [call for call in calls if call.result is not None]
    step = _after(intent, done[-1]) if done else _first(intent, earlier)
    if isinstance(step, str):
        return step
    if step[0].name not in available:
        return f"I can't do that here: the {step[0].name} tool is not available."
    # A turn makes three calls at most (list, list by a word, write); a repeat would be a loop.
    if any((c.name, c.arguments) == (step[0].name, step[1]) for c in calls):
        last = f" {_report(done[-1])}" if done else ""
        return f"I stopped here rather than repeat myself.{last}"
    return step


def _first(intent: Intent, earlier: list[int]) -> Step:
    verb, arguments, target = intent
    if verb == "added" and not arguments["title"]:
        return "What should the task say? For example: add a task to buy milk."
    if verb in ("added", "listed"):
        return _VERBS[verb], arguments
    if verb not in _TARGETED:
        return "You're welcome!" if verb == "thanks" else HELP
    # Task ids fit in 63 bits: a longer number is no task's (and int() refuses 4,300 digits).
    if (m := _ID.fullmatch(target)) and len(m[1].lstrip("0")) > 19:
        return _NO_ID
    it = _IT.fullmatch(target)
    if m or (it and len(earlier) == 1):
        return _VERBS[verb], {"task_id": int(m[1]) if m else earlier[0], **arguments}
    if re.match(r"(?:all|every|everything|them all)\b", target, re.I):
        return f"I can only {_TARGETED[verb]} one task at a time. Which one?"
    if it or not words(target):
        return 'Which task do you mean? Tell me its number, or say "show my tasks".'
    return _VERBS["listed"], {"status": "all"}  # to find the named task's id


def _after(intent: Intent, last: Call) -> Step:
    """A tool result came back: look the named task up in it, or report."""
    result, action = last.result or {}, ACTIONS[last.name]
    if "error" in result:
        what = "your tasks" if action.read else "that task"
        error = str(result["error"]).rstrip(".")
        return f"Sorry, I couldn't {last.name.split('_')[0]} {what}: {error}."
    if not (action.read and intent.verb in _TARGETED):
        return _report(last)
    tasks, count = _listed(result)
    searched = "search" in last.arguments
    if count > len(tasks) and not searched and not matching(tasks, intent.target):  # look again
        return action, {"status": "all", "search": max(words(intent.target), key=len)}
    phrase = re.sub(r"^(?:the|my|an?) | (?:task|todo|item|one|entry)$", "", intent.target.lower())
    matches = matching(tasks, intent.target)
    if intent.verb == "completed":
        open_ = [t for t in matches if not t.get("completed")]
        if matches and not open_:
            done = " and ".join(f"'{t['title']}' (task {t['id']})" for t in matches)
            return f"{done} {'is' if len(matches) == 1 else 'are'} already done."
        matches = open_
    if not matches:
        found = f"\n{format_tasks(tasks, count)}" if tasks else " You have no tasks."
        return f"I couldn't find a task matching '{phrase}'.{'' if searched else found}"
    if len(matches) > 1:
        options = "".join(f"\n- #{t['id']} {t['title']}" for t in matches)
        example = f'"{_TARGETED[intent.verb]} task {matches[0]["id"]}"'
        ask = f"Several tasks match '{phrase}'; which one do you mean?"
        return f"{ask}{options}\nTell me its number, e.g. {example}."
    return _VERBS[intent.verb], {"task_id": matches[0]["id"], **intent.arguments}


def _report(call: Call) -> str:
    """The reply after a tool call that went well."""
    result, action = call.result or {}, ACTIONS[call.name]
    if action.read:
        return format_tasks(*_listed(result), str(call.arguments.get("status", "all")))
    title, task_id = result.get("title", ""), result.get("task_id", "?")
    if action.verb == "completed":
        return f"Marked '{title}' (task {task_id}) as done."
    if action.verb == "updated" and "title" in call.arguments:
        return f"Renamed task {task_id} to '{title}'."
    if action.verb == "updated":
        return f"Updated the description of '{title}' (task {task_id})."
    return f"{action.verb.capitalize()} '{title}' (task {task_id})."


def format_tasks(tasks: list[dict[str, Any]], count: int, status: str = "all") -> str:
    """The task list as text; `count` (all that match) when the list is only the first ones."""
    which = "" if status == "all" else f"{status} "
    if not tasks:
        return f"You have no {which}tasks."
    lines = "".join(
        f"\n- #{t['id']} {t['title']} — {_STATE[bool(t.get('completed'))]}" for t in tasks
    )
    if count <= len(tasks):
        return f"Your {which}tasks ({len(tasks)}):{lines}"
    return (
        f"Your {which}tasks (the first {len(tasks)} of {count}):{lines}\nTo find one, name it "
        '("mark the milk task as done") or use its number, or say "show my pending tasks".'
    )


# --- speaking: one output item per response, as the SDK's stream events -----------------------


def respond(
    system_instructions: str | None, input: Any, model_settings: Any, tools: Any, *_: Any, **__: Any
) -> tuple[Any, dict[str, int]]:
    """This call's output item (a function call or the reply) and its usage (in word counts)."""
    items = [{"role": "user", "content": input}] if isinstance(input, str) else input
    items = [i if isinstance(i, Mapping) else i.model_dump(exclude_unset=True) for i in items]
    step = decide(items, {str(getattr(tool, "name", "")) for tool in tools})
    said = step if isinstance(step, str) else json.dumps(step[1], ensure_ascii=False)
    seen = [f"{text_of(i.get('content'))} {i.get('arguments', i.get('output', ''))}" for i in items]
    read_, wrote = (
        len(_TOKENS.findall(t)) for t in (" ".join([system_instructions or "", *seen]), said)
    )
    usage = {"prompt_tokens": read_, "completion_tokens": wrote, "total_tokens": read_ + wrote}
    if isinstance(step, str):
        return events.message_item(step, f"msg_{uuid.uuid4().hex}"), usage
    return events.call_item(f"call_{uuid.uuid4().hex}", step[0].name, said), usage


class OfflineModel(Model):
    """Rule-based stand-in for an LLM. It holds no state: one instance serves every run."""

    name = OFFLINE_MODEL_NAME

    async def get_response(self, *args: Any, **kwargs: Any) -> ModelResponse:
        item, usage = respond(*args, **kwargs)
        return ModelResponse([item], events.usage_of(usage), f"resp_{uuid.uuid4().hex}")

    async def stream_response(self, *args: Any, **kwargs: Any) -> AsyncIterator[Event]:
        item, usage = respond(*args, **kwargs)
        seq = itertools.count()
        if item.type == "message":  # the SDK reads the item's start, its text deltas, the end
            yield events.message_started(item.id, next(seq))
            for chunk in re.findall(r"\S+\s*|\s+", item.content[0].text):
                yield events.text_delta(item.id, chunk, next(seq))
        yield events.completed(OFFLINE_MODEL_NAME, [item], usage, next(seq))
