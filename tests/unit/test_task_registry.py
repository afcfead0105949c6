"""backend.tasks.registry: task ids as models send them, capped results, and each write action's
plan (checked before any SQL). Pure: no database."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from backend.core.errors import AppError, InvalidInput
from backend.tasks import registry, service
from backend.tasks.registry import (
    ACTIONS,
    Action,
    cap_output,
    coerce_task_id,
    list_hint,
    register,
    registered,
    task_view,
)


def _json_len(value: Any) -> int:
    return len(orjson.dumps(value).decode())


# --- coerce_task_id ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (5, 5),
        (5.0, 5),
        ("5", 5),
        ("#5", 5),
        (" 7 ", 7),
        ("007", 7),
        ("\t12\n", 12),
        ("#" + "0" * 40 + "5", 5),
        (2**63 - 1, 2**63 - 1),
        (str(2**63 - 1), 2**63 - 1),
    ],
)
def test_ids_as_models_send_them_are_accepted(given: Any, expected: int) -> None:
    assert coerce_task_id(given) == expected
    assert type(coerce_task_id(given)) is int


@pytest.mark.parametrize(
    "given",
    [
        True,
        False,
        5.5,
        float("inf"),
        float("nan"),
        "abc",
        "",
        "   ",
        "٣",  # Arabic-Indic digit three: a digit, but not an ASCII one
        "²",  # superscript two: isdigit() is True, int() refuses it
        "5.0",
        "-5",
        "+5",
        "5_000",
        "# 5",
        "5#",
        "0x10",
        None,
        [5],
        {"id": 5},
    ],
)
def test_anything_else_is_not_a_task_id(given: Any) -> None:
    with pytest.raises(InvalidInput) as caught:
        coerce_task_id(given)
    assert caught.value.field == "task_id"
    assert caught.value.status == 422


@pytest.mark.parametrize("given", [0, -1, -(2**70), 0.0, "0", "#000"])
def test_ids_no_task_can_have_are_not_found(given: Any) -> None:
    with pytest.raises(service.TaskNotFound) as caught:
        coerce_task_id(given)
    assert caught.value.status == 404


@pytest.mark.parametrize(
    "given",
    [
        2**63,
        pytest.param(10**4000, id="4001-digit-int"),
        "9" * 30,
        str(2**63),
        pytest.param("9" * 5000, id="5000-digit-string"),  # int() of it would raise
    ],
)
def test_ids_beyond_bigint_are_not_found_without_echoing_the_number(given: Any) -> None:
    with pytest.raises(service.TaskNotFound) as caught:
        coerce_task_id(given)
    assert caught.value.detail == "No task has that id"
    assert caught.value.task_id is None


# --- task_view, list_hint, cap_output ---------------------------------------------------------


def test_task_view_shows_exactly_the_four_fields_the_actions_return() -> None:
    row = SimpleNamespace(
        id=3, title="Milk", description=None, completed=True, user_id="alice", created_at="x"
    )
    assert task_view(row) == {"id": 3, "title": "Milk", "description": None, "completed": True}


def test_list_hint_names_both_numbers_and_how_to_narrow_the_list() -> None:
    hint = list_hint(50, 312)
    assert "first 50 of 312" in hint
    assert "search" in hint
    assert "status" in hint


@pytest.mark.parametrize(
    "result",
    [
        {"tasks": [], "count": 0},
        {"task_id": 1, "status": "created", "title": "x" * 900},
        {"text": "é" * 980},  # 1,960 bytes of UTF-8 but 991 characters of JSON: it fits
    ],
)
def test_a_result_that_fits_is_returned_as_is(result: dict[str, Any]) -> None:
    assert cap_output(result, 1000) is result


def _tasks(n: int, title_len: int = 40) -> list[dict[str, Any]]:
    return [
        {"id": i, "title": "t" * title_len, "description": None, "completed": False}
        for i in range(1, n + 1)
    ]


@pytest.mark.parametrize("max_chars", [1000, 2500, 16_000])
def test_a_long_list_keeps_as_many_whole_tasks_as_fit_with_count_and_hint(max_chars: int) -> None:
    tasks = _tasks(500)
    capped = cap_output({"tasks": tasks, "count": 500}, max_chars)
    shown = len(capped["tasks"])
    assert 0 < shown < 500
    assert capped["tasks"] == tasks[:shown]  # whole tasks, oldest first
    assert capped["count"] == 500
    assert capped["hint"] == list_hint(shown, 500)
    assert _json_len(capped) <= max_chars
    # The most that fit: one more task would not.
    bigger = {**capped, "tasks": tasks[: shown + 1], "hint": list_hint(shown + 1, 500)}
    assert _json_len(bigger) > max_chars


def test_a_list_without_a_usable_count_counts_the_tasks_it_was_given() -> None:
    for result in ({"tasks": _tasks(200)}, {"tasks": _tasks(200), "count": "many"}):
        capped = cap_output(result, 1000)
        assert capped["count"] == 200
        assert "of 200" in capped["hint"]


def test_a_list_whose_first_task_alone_is_too_long_keeps_count_and_hint_only() -> None:
    capped = cap_output({"tasks": _tasks(1, title_len=3000), "count": 1}, 1000)
    assert capped["tasks"] == []
    assert capped["count"] == 1
    assert "first 0 of 1" in capped["hint"]


def test_any_other_oversized_result_becomes_a_truncated_copy_of_its_json() -> None:
    result = {"note": "abcdefghij" * 500}
    capped = cap_output(result, 1000)
    assert capped["truncated"] is True
    assert orjson.dumps(result).decode().startswith(capped["output"])
    assert len(capped["output"]) == 1000 - 64
    assert _json_len(capped) <= 1000


def test_a_tasks_field_that_is_not_a_list_is_truncated_like_any_result() -> None:
    capped = cap_output({"tasks": "x" * 5000, "count": 3}, 1000)
    assert capped["truncated"] is True
    assert "tasks" not in capped


def test_a_truncated_result_is_within_the_limit_even_when_its_json_is_all_quotes() -> None:
    capped = cap_output({"words": ["a"] * 2000}, 1000)
    assert capped["truncated"] is True
    assert _json_len(capped) <= 1000


# --- Action ------------------------------------------------------------------------------------


def test_arguments_keeps_only_the_actions_own_parameters() -> None:
    add = ACTIONS["add_task"]
    given = {"title": "Milk", "description": "2 l", "user_id": "mallory", "task_id": 9}
    assert add.arguments(given) == {"title": "Milk", "description": "2 l"}


def test_arguments_of_an_action_without_parameters_is_empty() -> None:
    action = Action("noop", "d", {"type": "object"}, "…", "did", read=_read)
    assert action.arguments({"anything": 1}) == {}
    assert action.required == []


@pytest.mark.parametrize(
    ("name", "required"),
    [
        ("add_task", ["title"]),
        ("list_tasks", []),
        ("complete_task", ["task_id"]),
        ("update_task", ["task_id"]),
        ("delete_task", ["task_id"]),
    ],
)
def test_required_parameters_of_each_action(name: str, required: list[str]) -> None:
    assert ACTIONS[name].required == required


@pytest.mark.parametrize("name", sorted(ACTIONS))
def test_no_action_lets_the_model_name_the_user(name: str) -> None:
    properties = ACTIONS[name].parameters.get("properties", {})
    assert not any("user" in key for key in properties)
    assert "additionalProperties" not in ACTIONS[name].parameters  # Gemini refuses it


async def _read(db: Any, user_id: str) -> dict[str, Any]:
    return {}


def _plan(user_id: str, max_tasks: int) -> service.Change:
    return service.delete(user_id, 1)


@pytest.mark.parametrize("extra", [{}, {"plan": _plan, "read": _read}], ids=["neither", "both"])
def test_register_refuses_an_action_without_exactly_one_of_plan_and_read(
    extra: dict[str, Any],
) -> None:
    action = Action("unit_bad_action", "d", {"type": "object"}, "…", "did", **extra)
    with pytest.raises(ValueError, match="exactly one of plan and read"):
        register(action)
    assert "unit_bad_action" not in ACTIONS


def test_registered_adds_the_action_for_the_block_and_removes_it_after() -> None:
    action = Action("unit_probe", "d", {"type": "object"}, "…", "probed", plan=_plan)
    assert "unit_probe" not in ACTIONS
    with registered(action) as inside:
        assert inside is action
        assert ACTIONS["unit_probe"] is action
        assert registry.plan("unit_probe", "alice", {}, 10).params["uid"] == "alice"
    assert "unit_probe" not in ACTIONS


def test_registered_removes_the_action_even_when_the_block_fails() -> None:
    action = Action("unit_probe_fails", "d", {"type": "object"}, "…", "x", read=_read)
    with pytest.raises(RuntimeError), registered(action):
        raise RuntimeError("boom")
    assert "unit_probe_fails" not in ACTIONS


# --- plan: each write action, checked before any SQL ------------------------------------------


@pytest.mark.parametrize(
    ("name", "arguments", "error", "field"),
    [
        ("add_task", {"title": ""}, InvalidInput, "title"),
        ("add_task", {"title": "  \t\n "}, InvalidInput, "title"),
        ("add_task", {"title": "x" * 201}, InvalidInput, "title"),
        ("add_task", {"title": 5}, InvalidInput, "title"),
        ("add_task", {"title": None}, InvalidInput, "title"),
        ("add_task", {"title": ["Milk"]}, InvalidInput, "title"),
        ("add_task", {"title": "a\x00b"}, InvalidInput, "title"),
        ("add_task", {"title": "a\ud800b"}, InvalidInput, "title"),
        ("add_task", {"title": "Milk", "description": "d" * 2001}, InvalidInput, "description"),
        ("add_task", {"title": "Milk", "description": 7}, InvalidInput, "description"),
        ("add_task", {"title": "Milk", "description": "a\x00"}, InvalidInput, "description"),
        ("update_task", {"task_id": 3}, InvalidInput, "title"),
        ("update_task", {"task_id": 3, "title": None, "description": None}, InvalidInput, "title"),
        ("update_task", {"task_id": 3, "title": ""}, InvalidInput, "title"),
        ("update_task", {"task_id": 3, "title": "y" * 201}, InvalidInput, "title"),
        ("update_task", {"task_id": 3, "description": "d" * 2001}, InvalidInput, "description"),
        ("update_task", {"task_id": "three", "title": "New"}, InvalidInput, "task_id"),
        ("complete_task", {"task_id": "abc"}, InvalidInput, "task_id"),
        ("complete_task", {"task_id": True}, InvalidInput, "task_id"),
        ("delete_task", {"task_id": 2.5}, InvalidInput, "task_id"),
    ],
)
def test_invalid_arguments_are_refused_before_any_sql(
    name: str, arguments: dict[str, Any], error: type[AppError], field: str
) -> None:
    with pytest.raises(error) as caught:
        registry.plan(name, "alice", arguments, 100)
    assert getattr(caught.value, "field", None) == field
    assert caught.value.body()["errors"][0]["field"] == field


@pytest.mark.parametrize(
    ("name", "arguments"),
    [
        ("complete_task", {"task_id": 0}),
        ("update_task", {"task_id": -3, "title": "New"}),
        ("delete_task", {"task_id": 2**63}),
    ],
)
def test_ids_no_task_can_have_are_not_found_before_any_sql(
    name: str, arguments: dict[str, Any]
) -> None:
    with pytest.raises(service.TaskNotFound):
        registry.plan(name, "alice", arguments, 100)


def test_add_task_plan_carries_the_cleaned_values_the_user_and_the_limit() -> None:
    change = registry.plan(
        "add_task", "alice", {"title": "  Buy milk  ", "description": "  2 litres "}, 25
    )
    assert change.params == {
        "uid": "alice",
        "task_limit": 25,
        "title": "Buy milk",
        "description": "2 litres",
    }
    assert isinstance(change.missing, service.TaskLimitReached)
    assert change.missing.limit == 25


@pytest.mark.parametrize("description", [None, "", "   "])
def test_add_task_with_a_blank_description_stores_none(description: Any) -> None:
    change = registry.plan("add_task", "alice", {"title": "T", "description": description}, 5)
    assert change.params["description"] is None


def test_add_task_accepts_a_title_of_exactly_200_characters() -> None:
    change = registry.plan("add_task", "alice", {"title": "x" * 200}, 5)
    assert change.params["title"] == "x" * 200


def test_complete_task_plan_sets_only_completed() -> None:
    change = registry.plan("complete_task", "bob", {"task_id": "#12"}, 5)
    assert change.params["uid"] == "bob"
    assert change.params["task_id"] == 12
    assert change.params["completed"] is True
    assert change.params["set_completed"] is True
    assert change.params["set_title"] is False
    assert change.params["set_description"] is False
    assert isinstance(change.missing, service.TaskNotFound)
    assert change.missing.detail == "Task 12 not found"


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (
            {"task_id": 4, "title": "  New title "},
            {"title": "New title", "set_title": True, "set_description": False},
        ),
        (
            {"task_id": 4, "description": " details "},
            {"description": "details", "set_title": False, "set_description": True},
        ),
        (
            {"task_id": 4, "description": ""},  # an empty description clears it
            {"description": None, "set_title": False, "set_description": True},
        ),
        (
            {"task_id": "4", "title": "A", "description": "B"},
            {"title": "A", "description": "B", "set_title": True, "set_description": True},
        ),
    ],
)
def test_update_task_plan_sets_what_was_given(
    arguments: dict[str, Any], expected: dict[str, Any]
) -> None:
    change = registry.plan("update_task", "carol", arguments, 5)
    assert change.params["uid"] == "carol"
    assert change.params["task_id"] == 4
    assert change.params["set_completed"] is False
    for key, value in expected.items():
        assert change.params[key] == value, key


def test_delete_task_plan_names_the_user_and_the_task() -> None:
    change = registry.plan("delete_task", "dave", {"task_id": 8.0}, 5)
    assert change.params == {"uid": "dave", "task_id": 8}
    assert isinstance(change.missing, service.TaskNotFound)


def test_the_user_id_comes_from_the_caller_not_from_the_arguments() -> None:
    add = ACTIONS["add_task"]
    given = {"title": "Milk", "user_id": "mallory", "uid": "mallory"}
    change = registry.plan("add_task", "alice", add.arguments(given), 5)
    assert change.params["uid"] == "alice"


@pytest.mark.parametrize(
    ("name", "arguments"),
    [("add_task", {}), ("add_task", {"title": "a", "bogus": 1}), ("delete_task", {})],
)
def test_missing_or_unknown_arguments_are_a_type_error(
    name: str, arguments: dict[str, Any]
) -> None:
    with pytest.raises(TypeError):
        registry.plan(name, "alice", arguments, 5)


def test_planning_a_read_is_refused() -> None:
    with pytest.raises(AssertionError, match="is a read"):
        registry.plan("list_tasks", "alice", {}, 5)
