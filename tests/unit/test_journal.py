"""backend.chat.journal, the parts built before any SQL runs: the result JSON's key order, the
cached tool-call statement, and the parameters a turn's record carries. No engine is used (it is
None: touching it would fail the test)."""

from __future__ import annotations

import uuid

import orjson
import pytest

from backend.agent.context import Call
from backend.chat.history import INTERRUPTED_NOTE
from backend.chat.journal import TurnJournal, Unrecorded, _result_json, _statement
from backend.core.errors import InvalidInput
from backend.tasks import service
from backend.tasks.registry import ACTIONS, Action


def _action(fields: tuple[str, ...], status: str = "created") -> Action:
    return Action(
        "unit_write",
        "d",
        {"type": "object"},
        "…",
        "wrote",
        plan=lambda user_id, max_tasks: service.delete(user_id, 1),
        result_fields=fields,
        status=status,
    )


@pytest.mark.parametrize(
    ("name", "keys"),
    [
        ("add_task", ["task_id", "status", "title"]),
        ("complete_task", ["task_id", "status", "title"]),
        ("update_task", ["task_id", "status", "title", "description"]),
        ("delete_task", ["task_id", "status", "title"]),
    ],
)
def test_result_json_has_the_actions_keys_in_order(name: str, keys: list[str]) -> None:
    sql = _result_json(ACTIONS[name])
    positions = [sql.index(f'"{key}":') for key in keys]
    assert positions == sorted(positions)
    assert sql.count('":') == len(keys)
    assert sql.startswith("'{\"task_id\":'")
    assert sql.endswith("|| '}'")


@pytest.mark.parametrize("name", ["add_task", "complete_task", "update_task", "delete_task"])
def test_result_json_states_the_actions_status(name: str) -> None:
    action = ACTIONS[name]
    assert f"'\"{action.status}\"'" in _result_json(action)


def test_result_json_follows_a_custom_field_order() -> None:
    sql = _result_json(_action(("title", "task_id")))
    assert sql.startswith("'{\"title\":'")
    assert sql.index('"title":') < sql.index(',"task_id":')
    assert "status" not in sql


def test_a_description_that_is_null_is_written_as_json_null() -> None:
    sql = _result_json(_action(("task_id", "description")))
    assert "COALESCE(CAST(to_json(task.description) AS text), 'null')" in sql


def test_the_statement_is_built_once_per_action_and_shape() -> None:
    action = ACTIONS["add_task"]
    ctes = service.create("alice", "Milk", None, 5).ctes
    first = _statement(action, ctes, True)
    assert _statement(action, ctes, True) is first
    assert _statement(action, ctes, False) is not first
    assert _statement(ACTIONS["delete_task"], service.delete("a", 1).ctes, True) is not first


def test_a_recorded_statement_appends_the_call_to_the_reply_in_the_same_statement() -> None:
    action = ACTIONS["delete_task"]
    ctes = service.delete("alice", 3).ctes
    recorded = str(_statement(action, ctes, True))
    unrecorded = str(_statement(action, ctes, False))
    for sql in (recorded, unrecorded):
        assert sql.startswith("WITH ")
        assert "DELETE FROM tasks" in sql
        assert "output AS" in sql
    for part in ("recorded AS", "orphaned AS", ":call_id", ":turn", ":reply"):
        assert part in recorded
        assert part not in unrecorded
    assert unrecorded.rstrip().endswith("SELECT text FROM output")


def test_a_result_obtained_elsewhere_is_recorded_with_output_as_a_parameter() -> None:
    sql = str(_statement(ACTIONS["list_tasks"], None, True))
    assert "CAST(:output AS text)" in sql
    assert "recorded AS" in sql
    assert "task" not in sql.split("recorded AS")[0]  # no change CTEs


CALL = Call(
    name="add_task",
    arguments={"title": "Milk", "description": "2 l"},
    item={"type": "function_call", "call_id": "call_7", "name": "add_task", "arguments": "{}"},
)


def journal(user_row: int | None) -> TurnJournal:
    return TurnJournal(
        engine=None,  # type: ignore[arg-type]
        user_id="alice",
        max_tasks=10,
        conversation_id=uuid.UUID(int=1),
        turn=uuid.UUID(int=2),
        user_row=user_row,
        reply_row=41,
    )


def test_a_turns_record_names_the_conversation_turn_rows_and_call() -> None:
    extra = journal(user_row=40)._extra(CALL)
    assert extra["cid"] == uuid.UUID(int=1)
    assert extra["turn"] == uuid.UUID(int=2)
    assert extra["user_row"] == 40
    assert extra["reply"] == 41
    assert extra["tool"] == "add_task"
    assert orjson.loads(extra["arguments"]) == {"title": "Milk", "description": "2 l"}
    assert orjson.loads(extra["call_item"]) == CALL.item
    assert extra["call_bytes"] == len(extra["call_item"])
    assert extra["call_id"] == "call_7"
    assert extra["note"] == INTERRUPTED_NOTE
    assert extra["orphan_item_id"].startswith("msg_")


def test_without_a_user_row_the_record_points_at_the_reply_row() -> None:
    assert journal(user_row=None)._extra(CALL)["user_row"] == 41


def test_a_call_item_without_an_id_records_an_empty_call_id() -> None:
    call = Call("list_tasks", {}, {"type": "function_call", "name": "list_tasks"})
    assert journal(user_row=1)._extra(call)["call_id"] == ""


def test_each_record_gets_its_own_orphan_item_id() -> None:
    j = journal(user_row=1)
    assert j._extra(CALL)["orphan_item_id"] != j._extra(CALL)["orphan_item_id"]


def test_only_a_turn_journal_records() -> None:
    plain = Unrecorded(engine=None, user_id="alice", max_tasks=10)  # type: ignore[arg-type]
    assert plain.recorded is False
    assert plain._extra(CALL) == {}
    assert journal(user_row=1).recorded is True


@pytest.mark.parametrize(
    "call",
    [
        Call("add_task", {"title": "   "}, {}),
        Call("update_task", {"task_id": 1}, {}),
        Call("delete_task", {"task_id": "one"}, {}),
    ],
)
async def test_an_invalid_write_fails_before_touching_the_database(call: Call) -> None:
    # The engine is None: reaching it would raise AttributeError, not InvalidInput.
    with pytest.raises(InvalidInput):
        await journal(user_row=1).run(call, max_output=16_000)
    with pytest.raises(InvalidInput):
        await Unrecorded(None, "alice", 10).run(call, max_output=16_000)  # type: ignore[arg-type]


async def test_an_unknown_task_id_fails_before_touching_the_database() -> None:
    call = Call("complete_task", {"task_id": 0}, {})
    with pytest.raises(service.TaskNotFound):
        await journal(user_row=1).run(call, max_output=16_000)
