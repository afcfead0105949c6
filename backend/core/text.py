"""Text that PostgreSQL cannot store (NUL characters, lone UTF-16 surrogates) is refused up front."""

from __future__ import annotations

from backend.core.errors import InvalidInput


def clean_text(field: str, text: str, max_chars: int) -> str:
    """Trimmed `text`: not empty, at most `max_chars`, storable. The one rule for titles and messages."""
    text = text.strip()
    if not text:
        raise InvalidInput(field, "must not be empty")
    if len(text) > max_chars:
        raise InvalidInput(field, f"must be at most {max_chars} characters")
    return require_storable(field, text)


def require_storable(field: str, text: str) -> str:
    if "\x00" in text:
        raise InvalidInput(field, "must not contain NUL characters")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(field, "must be valid Unicode (no lone surrogates)") from None
    return text
