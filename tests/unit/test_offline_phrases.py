"""The offline model's phrase table, walked entry by entry, and the phrases the README, the
playground and the tests use: pure parsing, no database."""

from __future__ import annotations

import inspect
import re
from typing import Any

import pytest

from backend.agent import offline
from backend.agent.offline import PHRASES, parse
from backend.tasks.registry import ACTIONS


@pytest.mark.parametrize(("index", "entry"), list(enumerate(PHRASES)))
def test_each_phrase_table_entry_reads_its_example(index: int, entry: tuple[str, str, str]) -> None:
    example, pattern, intent = entry
    assert re.fullmatch(pattern, example, re.I), "the example matches its own pattern"
    earlier = [p for _, p, _ in PHRASES[:index] if re.fullmatch(p, example, re.I)]
    assert earlier == [], "no earlier entry takes it first"
    assert parse(example).verb == intent
    assert intent in {a.verb for a in ACTIONS.values()} | {"thanks"}


@pytest.mark.parametrize(
    ("message", "verb", "arguments", "target"),
    [
        ("add buy milk", "added", {"title": "Buy milk"}, ""),
        ("add a task to buy milk", "added", {"title": "Buy milk"}, ""),
        ("remind me to call mom", "added", {"title": "Call mom"}, ""),
        ("show my tasks", "listed", {"status": "all"}, ""),
        ("what's pending", "listed", {"status": "pending"}, ""),
        ("What\u2019s left?", "listed", {"status": "pending"}, ""),
        ("what have I completed", "listed", {"status": "completed"}, ""),
        ("show completed tasks", "listed", {"status": "completed"}, ""),
        ("complete task 3", "completed", {}, "task 3"),
        ("rename task 2 to buy oat milk", "updated", {"title": "Buy oat milk"}, "task 2"),
        ("rename task 3 to call mom", "updated", {"title": "Call mom"}, "task 3"),
        ("delete task 4", "deleted", {}, "task 4"),
        ("mark the milk task as done", "completed", {}, "the milk task"),
        ("delete the milk task", "deleted", {}, "the milk task"),
        ("mark it done", "completed", {}, "it"),
        ("delete it", "deleted", {}, "it"),
        (
            "Could you please add a task: call the bank, thanks",
            "added",
            {"title": "Call the bank"},
            "",
        ),
        ("what is the weather", "help", {}, ""),
    ],
)
def test_phrases_people_use(
    message: str, verb: str, arguments: dict[str, Any], target: str
) -> None:
    assert parse(message) == (verb, arguments, target)


def test_the_offline_model_spells_no_action_name() -> None:
    source = inspect.getsource(offline)
    assert ACTIONS and not [name for name in ACTIONS if name in source]
