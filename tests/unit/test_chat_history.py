"""backend.chat.history and backend.agent.items: what the model gets back as history, conversation
titles and token counts (tiktoken's offline encoding: no network)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from backend.agent.items import text_of
from backend.chat.history import (
    INLINE_TOKEN_CHARS,
    INTERRUPTED_NOTE,
    count_tokens,
    count_tokens_async,
    replay_items,
    title_from,
    to_input_items,
)

# --- text_of ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "text"),
    [
        ("plain", "plain"),
        ("", ""),
        (
            [{"type": "output_text", "text": "Hello, "}, {"type": "output_text", "text": "world"}],
            "Hello, world",
        ),
        ([{"type": "input_text", "text": "a"}, {"type": "refusal"}, {"text": "b"}], "ab"),
        (["not a part", {"text": "kept"}, 5], "kept"),
        ([], ""),
        (None, ""),
        (42, ""),
        ({"text": "a dict, not a list"}, ""),
    ],
)
def test_text_of(content: Any, text: str) -> None:
    assert text_of(content) == text


# --- to_input_items -----------------------------------------------------------------------------


def row(role: str, content: str | None = "", status: str = "done", items: Any = None) -> Any:
    return SimpleNamespace(role=role, content=content, status=status, items=items)


def test_history_is_user_and_assistant_text_in_order() -> None:
    rows = [row("user", "Add milk"), row("assistant", "Added."), row("user", "Thanks")]
    assert to_input_items(rows) == [
        {"role": "user", "content": "Add milk"},
        {"role": "assistant", "content": "Added."},
        {"role": "user", "content": "Thanks"},
    ]


def test_the_window_starts_at_a_user_message() -> None:
    rows = [
        row("assistant", "tail of an older reply"),
        row("user", "Hi"),
        row("assistant", "Hello"),
    ]
    assert to_input_items(rows)[0] == {"role": "user", "content": "Hi"}
    assert len(to_input_items(rows)) == 2


@pytest.mark.parametrize("rows", [[], [row("assistant", "orphan")], [row("widget", "w")]])
def test_no_user_message_means_no_history(rows: list[Any]) -> None:
    assert to_input_items(rows) == []


@pytest.mark.parametrize("status", ["interrupted", "running"])
def test_a_reply_cut_off_before_its_text_shows_the_interruption(status: str) -> None:
    items = to_input_items([row("user", "Add milk"), row("assistant", "", status=status)])
    assert items[-1] == {"role": "assistant", "content": INTERRUPTED_NOTE}


def test_a_finished_reply_without_text_adds_nothing() -> None:
    assert to_input_items([row("user", "Hi"), row("assistant", None, status="done")]) == [
        {"role": "user", "content": "Hi"}
    ]


def test_an_interrupted_reply_that_has_text_keeps_its_text() -> None:
    items = to_input_items([row("user", "Hi"), row("assistant", "Partial", status="interrupted")])
    assert items[-1] == {"role": "assistant", "content": "Partial"}


def test_chatkit_only_rows_are_not_model_history() -> None:
    rows = [
        row("user", "Hi"),
        row("widget", "card"),
        row("hidden_context", "x"),
        row("user", "Again"),
    ]
    assert [i["content"] for i in to_input_items(rows)] == ["Hi", "Again"]


CALL = {
    "type": "function_call",
    "call_id": "call_1",
    "name": "add_task",
    "arguments": '{"title":"Milk"}',
    "provider_data": {"thought_signature": "sig"},
}
OUTPUT = {"type": "function_call_output", "call_id": "call_1", "output": '{"task_id":1}'}


def test_a_replys_tool_calls_are_replayed_before_its_text() -> None:
    items = to_input_items(
        [row("user", "Add milk"), row("assistant", "Added milk.", items=[CALL, OUTPUT])]
    )
    assert items == [
        {"role": "user", "content": "Add milk"},
        CALL,  # every field kept, the thought signature too
        OUTPUT,
        {"role": "assistant", "content": "Added milk."},
    ]


def test_an_interrupted_reply_replays_its_committed_calls_then_the_note() -> None:
    items = to_input_items(
        [row("user", "Add milk"), row("assistant", "", status="interrupted", items=[CALL, OUTPUT])]
    )
    assert items[1:] == [CALL, OUTPUT, {"role": "assistant", "content": INTERRUPTED_NOTE}]


def test_a_stored_assistant_message_item_is_not_repeated_by_the_rows_text() -> None:
    message = {
        "type": "message",
        "role": "assistant",
        "content": [{"type": "output_text", "text": "Added milk."}],
    }
    items = to_input_items(
        [row("user", "Add milk"), row("assistant", "Added milk.", items=[CALL, OUTPUT, message])]
    )
    assert items[1:] == [CALL, OUTPUT, {"role": "assistant", "content": "Added milk."}]


def test_replay_items_turns_assistant_parts_into_plain_text_and_drops_the_rest() -> None:
    stored = [
        {"type": "reasoning", "summary": []},
        {"role": "assistant", "content": [{"type": "output_text", "text": "Let me look."}]},
        CALL,
        OUTPUT,
        {"role": "assistant", "type": "message", "content": []},  # no text: dropped
        {"role": "user", "content": "not replayed from a reply"},
    ]
    assert replay_items(stored) == [
        {"role": "assistant", "content": "Let me look."},
        CALL,
        OUTPUT,
    ]


# --- title_from ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "title"),
    [
        ("Buy milk", "Buy milk"),
        ("  Buy\n\tmilk  today ", "Buy milk today"),
        ("x" * 60, "x" * 60),
        ("word " * 20, "word word word word word word word word word word word word…"),
        ("y" * 100, "y" * 60 + "…"),  # one long word is cut inside it
        (
            "Plan the trip, book hotels, rent a car, pack bags, water plants, call mom",
            "Plan the trip, book hotels, rent a car, pack bags, water…",
        ),
        ("", ""),
    ],
)
def test_a_title_is_the_first_words_cut_at_a_word_boundary(message: str, title: str) -> None:
    assert title_from(message) == title


def test_title_limit_is_a_parameter() -> None:
    assert title_from("alpha beta gamma", limit=10) == "alpha…"
    assert title_from("alpha beta gamma", limit=16) == "alpha beta gamma"


def test_a_cut_title_drops_trailing_punctuation_before_the_ellipsis() -> None:
    assert title_from("Groceries: milk, eggs, bread", limit=12) == "Groceries…"
    assert title_from("first, second third", limit=10) == "first…"


# --- count_tokens -----------------------------------------------------------------------------


def test_counting_uses_cl100k_plus_the_message_framing() -> None:
    assert count_tokens("") == 4
    assert count_tokens("hello world") == 2 + 4  # "hello", " world"


def test_more_text_is_more_tokens() -> None:
    assert count_tokens("milk " * 100) > count_tokens("milk " * 10) > count_tokens("milk")


def test_tool_items_count_too() -> None:
    plain = count_tokens("Added milk.")
    assert count_tokens("Added milk.", [CALL, OUTPUT]) > plain
    assert count_tokens("Added milk.", []) == plain


def test_special_token_text_is_counted_as_ordinary_text() -> None:
    # A user typing a special token must not break counting (or become a special token).
    assert count_tokens("<|endoftext|>") > 4 + 1


@pytest.mark.parametrize("size", [10, INLINE_TOKEN_CHARS + 1000])
async def test_async_counting_agrees_with_sync_counting(size: int) -> None:
    text = ("Buy milk and eggs. " * (size // 19 + 1))[:size]
    assert await count_tokens_async(text, [CALL]) == count_tokens(text, [CALL])
