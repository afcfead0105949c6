"""The per-request context every ChatKit store method receives."""

from __future__ import annotations

from dataclasses import dataclass

from backend.auth.user import User


@dataclass
class ChatKitContext:
    """Built from the verified token for one ChatKit request; never from the request body."""

    user: User
    """Every store method acts on this user's threads and no one else's."""
