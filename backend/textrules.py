"""Text that PostgreSQL cannot store (NUL characters, lone UTF-16 surrogates) is refused up front."""

from __future__ import annotations

from backend.errors import InvalidInput


def require_storable(field: str, text: str) -> str:
    if "\x00" in text:
        raise InvalidInput(field, "must not contain NUL characters")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(field, "must be valid Unicode (no lone surrogates)") from None
    return text
