"""The caller of a request, as proven by a verified token: a plain value every layer may use."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class User:
    """The caller, as proven by a verified token."""

    id: str
    """The token's `sub`: the only source of identity anywhere in the service."""
    claims: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    token: str = field(default="", repr=False, compare=False)
    """The raw bearer token, kept only to forward to our own MCP server."""
