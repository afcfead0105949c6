"""backend.tasks.service and backend.core.text: the task rules that need no database (cleaning
input, building a change's SQL parameters, the not-found and limit errors)."""

from __future__ import annotations

from typing import Any

import pytest

from backend.core.errors import Conflict, InvalidInput, NotFound
from backend.core.text import clean_text, require_storable
from backend.tasks import service
from backend.tasks.registry import ACTIONS
from backend.tasks.service import (
    DESCRIPTION_MAX,
    SEARCH_MAX,
    TITLE_MAX,
    TaskLimitReached,
    TaskNotFound,
    clean_description,
    clean_search,
    clean_title,
)

# --- core.text ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("  hello  ", "hello"),
        ("\t\nhello\r\n", "hello"),
        ("two  inner   spaces", "two  inner   spaces"),  # only the ends are trimmed
        ("line one\nline two", "line one\nline two"),
        ("tab\tinside", "tab\tinside"),
        ("José 用户 🧪", "José 用户 🧪"),
        ("\u00a0nbsp\u00a0", "nbsp"),  # str.strip() knows Unicode spaces
    ],
)
def test_clean_text_trims_the_ends_and_keeps_the_rest(given: str, expected: str) -> None:
    assert clean_text("message", given, 100) == expected


@pytest.mark.parametrize("given", ["", " ", "\n\t ", "\u3000"])
def test_clean_text_refuses_blank_text_naming_the_field(given: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        clean_text("message", given, 100)
    assert caught.value.field == "message"
    assert caught.value.message == "must not be empty"


def test_clean_text_counts_the_length_after_trimming() -> None:
    assert clean_text("title", "   " + "x" * 10 + "   ", 10) == "x" * 10
    with pytest.raises(InvalidInput, match="at most 10 characters"):
        clean_text("title", "x" * 11, 10)


def test_clean_text_counts_characters_not_bytes() -> None:
    assert clean_text("title", "é" * 10, 10) == "é" * 10  # 20 bytes of UTF-8


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("a\x00b", "must not contain NUL characters"),
        ("\x00", "must not contain NUL characters"),
        ("a\ud800b", "must be valid Unicode (no lone surrogates)"),
        ("\udfff", "must be valid Unicode (no lone surrogates)"),
    ],
)
def test_text_postgresql_cannot_store_is_refused(given: str, message: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        require_storable("content", given)
    assert caught.value.field == "content"
    assert caught.value.message == message
    with pytest.raises(InvalidInput):
        clean_text("content", given, 100)


@pytest.mark.parametrize("given", ["", "\x01\x1f\x7f", "\u2028", "😀", "\U0010ffff"])
def test_other_text_is_storable_as_is(given: str) -> None:
    assert require_storable("content", given) == given


# --- clean_title, clean_description, clean_search ----------------------------------------------


def test_the_limits_are_the_ones_the_tool_descriptions_promise_the_model() -> None:
    add = ACTIONS["add_task"].parameters["properties"]
    update = ACTIONS["update_task"].parameters["properties"]
    assert f"1-{TITLE_MAX} characters" in add["title"]["description"]
    assert f"1-{TITLE_MAX} characters" in update["title"]["description"]
    assert f"{DESCRIPTION_MAX} characters" in add["description"]["description"]
    assert f"{DESCRIPTION_MAX} characters" in update["description"]["description"]
    clean_search("s" * SEARCH_MAX)


@pytest.mark.parametrize("title", [None, 5, 5.0, b"bytes", ["a"], {"t": 1}])
def test_a_title_must_be_a_string(title: Any) -> None:
    with pytest.raises(InvalidInput, match="title: must be a string"):
        clean_title(title)


def test_clean_title_trims_and_bounds() -> None:
    assert clean_title("  Buy milk ") == "Buy milk"
    assert clean_title(" " + "x" * 200 + " ") == "x" * 200
    with pytest.raises(InvalidInput, match="at most 200"):
        clean_title("x" * 201)


@pytest.mark.parametrize(
    ("given", "expected"),
    [(None, None), ("", None), ("   ", None), (" 2 litres ", "2 litres"), ("d" * 2000, "d" * 2000)],
)
def test_clean_description(given: Any, expected: str | None) -> None:
    assert clean_description(given) == expected


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (5, "must be a string"),
        (["x"], "must be a string"),
        ("d" * 2001, "must be at most 2000 characters"),
        ("ok\x00", "must not contain NUL characters"),
        ("\ud83d", "no lone surrogates"),
    ],
)
def test_clean_description_refuses(given: Any, message: str) -> None:
    with pytest.raises(InvalidInput, match=message) as caught:
        clean_description(given)
    assert caught.value.field == "description"


def test_a_long_description_is_measured_after_trimming() -> None:
    assert clean_description("  " + "d" * 2000 + "  ") == "d" * 2000


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (None, None),
        ("", None),
        ("  \t ", None),
        ("milk", "milk"),
        ("  buy   the\tmilk \n", "buy the milk"),  # inner runs of whitespace become one space
        ("100%_done", "100%_done"),  # LIKE wildcards are escaped by the query, not removed
    ],
)
def test_clean_search(given: Any, expected: str | None) -> None:
    assert clean_search(given) == expected


def test_clean_search_bounds_the_collapsed_text() -> None:
    assert clean_search("a " * 100 + "   ") == ("a " * 100).strip()  # 199 characters
    with pytest.raises(InvalidInput, match="search: must be at most 200"):
        clean_search("x" * 201)


@pytest.mark.parametrize(("given", "message"), [(3, "must be a string"), ("a\x00", "NUL")])
def test_clean_search_refuses(given: Any, message: str) -> None:
    with pytest.raises(InvalidInput, match=message) as caught:
        clean_search(given)
    assert caught.value.field == "search"


# --- create, update, delete: pure Change builders ----------------------------------------------


def test_create_builds_a_change_with_cleaned_values_and_the_limit() -> None:
    change = service.create("alice", " Milk ", " 2 l ", 7)
    assert change.params == {"uid": "alice", "task_limit": 7, "title": "Milk", "description": "2 l"}
    assert "INSERT INTO tasks" in change.ctes
    assert isinstance(change.missing, TaskLimitReached)
    assert change.missing.limit == 7


def test_create_refuses_invalid_input_before_building_anything() -> None:
    with pytest.raises(InvalidInput, match="title"):
        service.create("alice", "", None, 7)
    with pytest.raises(InvalidInput, match="description"):
        service.create("alice", "Milk", "d" * 2001, 7)


def test_update_with_nothing_given_only_moves_updated_at() -> None:
    change = service.update("alice", 3)
    assert change.params["set_title"] is False
    assert change.params["set_description"] is False
    assert change.params["set_completed"] is False
    assert change.params["task_id"] == 3


@pytest.mark.parametrize("completed", [True, False])
def test_update_sets_completed(completed: bool) -> None:
    change = service.update("alice", 3, completed=completed)
    assert change.params["completed"] is completed
    assert change.params["set_completed"] is True


@pytest.mark.parametrize("completed", ["true", 1, 0, None])
def test_update_refuses_a_completed_that_is_not_a_boolean(completed: Any) -> None:
    with pytest.raises(InvalidInput, match="completed: must be true or false"):
        service.update("alice", 3, completed=completed)


def test_update_with_a_none_description_clears_it() -> None:
    change = service.update("alice", 3, description=None)
    assert change.params["set_description"] is True
    assert change.params["description"] is None


def test_update_cleans_the_title() -> None:
    change = service.update("alice", 3, title="  New  ")
    assert change.params["title"] == "New"
    with pytest.raises(InvalidInput):
        service.update("alice", 3, title="   ")


@pytest.mark.parametrize("task_id", [0, -1, 2**63, "3", 3.0, None])
def test_update_and_delete_refuse_ids_no_task_can_have(task_id: Any) -> None:
    with pytest.raises(TaskNotFound):
        service.update("alice", task_id, completed=True)
    with pytest.raises(TaskNotFound):
        service.delete("alice", task_id)


def test_delete_builds_a_change_for_that_users_task() -> None:
    change = service.delete("bob", 42)
    assert change.params == {"uid": "bob", "task_id": 42}
    assert "DELETE FROM tasks" in change.ctes
    assert ":uid" in change.ctes  # never another user's row
    assert change.missing.detail == "Task 42 not found"


def test_a_change_cannot_be_altered_after_it_was_checked() -> None:
    with pytest.raises(AttributeError):
        service.delete("bob", 42).params = {}  # type: ignore[misc]


# --- the errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("task_id", "detail", "shown"),
    [
        (7, "Task 7 not found", 7),
        (2**63 - 1, f"Task {2**63 - 1} not found", 2**63 - 1),
        (2**63, "No task has that id", None),
        pytest.param(10**5000, "No task has that id", None, id="5001-digits"),  # str() raises
        ("abc", "No task has that id", None),
        (None, "No task has that id", None),
    ],
)
def test_task_not_found_never_echoes_what_it_cannot_show(
    task_id: Any, detail: str, shown: Any
) -> None:
    error = TaskNotFound(task_id)
    assert isinstance(error, NotFound)
    assert error.status == 404
    assert error.body() == {"detail": detail, "code": "task_not_found"}
    assert error.task_id == shown


def test_task_limit_reached_is_a_retryable_conflict_naming_the_limit() -> None:
    error = TaskLimitReached(1000)
    assert isinstance(error, Conflict)
    assert error.status == 409
    assert error.code == "task_limit_reached"
    assert error.detail.startswith("You already have 1000 tasks")
    assert error.headers == {"Retry-After": "1"}
