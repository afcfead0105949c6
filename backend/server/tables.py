"""Every table model, imported in one place so Alembic and the drift test see the whole schema."""

from backend.chat.models import Conversation, Message
from backend.core.db import metadata
from backend.reliability.models import IdempotencyKey, RateLimitState
from backend.tasks.models import Task, TaskCount

__all__ = [
    "Conversation",
    "IdempotencyKey",
    "Message",
    "RateLimitState",
    "Task",
    "TaskCount",
    "metadata",
]
