"""Helpers for model input items (Responses-style dicts), shared by the model adapters and history."""

from __future__ import annotations

from typing import Any


def text_of(content: Any) -> str:
    """The text of an item's content: a string, or a list of parts with `text`."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""
