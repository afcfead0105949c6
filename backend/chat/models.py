"""The `conversations` and `messages` tables.

A conversation holds one row per user message and one row per assistant reply (plus, for
ChatKit threads, rows with role "event" for items such as progress or hidden context). The assistant
row keeps the turn's tool calls twice: `tool_calls` in the shape clients see, and `items`, the
exact model input items (function calls with provider extras such as Gemini thought signatures,
and their outputs) that are replayed to the model as history.

Both tables are per user: every primary key, unique index and foreign key starts with `user_id`,
so they can be distributed by user (docs/distribution.md). A conversation's id (a UUID) and a
message's item id are unique per user.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKeyConstraint,
    Identity,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Text,
    Uuid,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from backend.core.timeutil import utcnow


class Conversation(SQLModel, table=True):
    __tablename__ = "conversations"
    __table_args__ = (
        PrimaryKeyConstraint("user_id", "id"),
        Index("ix_conversations_user_id_updated_at", "user_id", "updated_at", "id"),
        # The user's running turns, counted by every claim (MAX_ACTIVE_TURNS_PER_USER).
        Index(
            "ix_conversations_active_turns",
            "user_id",
            "active_turn_expires_at",
            postgresql_where=text("active_turn IS NOT NULL"),
        ),
    )

    id: uuid.UUID = Field(default_factory=uuid.uuid4, sa_column=Column(Uuid, primary_key=True))
    user_id: str = Field(sa_column=Column(String(255), primary_key=True))
    title: str | None = Field(default=None, sa_column=Column(String(200), nullable=True))
    created_at: datetime = Field(
        default_factory=utcnow,
        sa_column=Column(DateTime(timezone=True), nullable=False, server_default=func.now()),
    )
    updated_at: datetime = Field(
        default_factory=utcnow,
        sa_column=Column(DateTime(timezone=True), nullable=False, server_default=func.now()),
    )
    active_turn: uuid.UUID | None = Field(default=None, sa_column=Column(Uuid, nullable=True))
    """The turn now running in this conversation (one at a time); NULL when idle."""
    active_turn_expires_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    """When a crashed turn's claim lapses, so a killed process never blocks the conversation."""
    listed: bool = Field(
        default=True,
        sa_column=Column(Boolean, nullable=False, server_default=text("true")),
    )
    """False for a conversation whose first turn has not committed anything yet (not listed)."""


class Message(SQLModel, table=True):
    __tablename__ = "messages"
    __table_args__ = (
        PrimaryKeyConstraint("user_id", "id"),
        ForeignKeyConstraint(
            ["user_id", "conversation_id"],
            ["conversations.user_id", "conversations.id"],
            ondelete="CASCADE",
        ),
        Index("ix_messages_conversation_id_id", "conversation_id", "id"),
        Index("ix_messages_user_id_item_id", "user_id", "item_id", unique=True),
        Index("ix_messages_turn_id", "turn_id"),
    )

    id: int | None = Field(
        default=None, sa_column=Column(BigInteger, Identity(always=False), primary_key=True)
    )
    conversation_id: uuid.UUID = Field(sa_column=Column(Uuid, nullable=False))
    user_id: str = Field(sa_column=Column(String(255), primary_key=True))
    role: str = Field(sa_column=Column(String(16), nullable=False))
    content: str = Field(sa_column=Column(Text, nullable=False))
    tool_calls: list[dict[str, Any]] | None = Field(
        default=None, sa_column=Column(JSONB, nullable=True)
    )
    items: list[dict[str, Any]] | None = Field(default=None, sa_column=Column(JSONB, nullable=True))
    token_count: int = Field(
        default=0, sa_column=Column(Integer, nullable=False, server_default="0")
    )
    item_id: str | None = Field(
        default=None,
        sa_column=Column(
            String(64),
            nullable=False,
            server_default=text("'msg_' || replace(gen_random_uuid()::text, '-', '')"),
        ),
    )
    """The ChatKit thread item id (every row has one, also rows written by /api/chat)."""
    item: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONB, nullable=True))
    """The full ChatKit item, for rows ChatKit wrote; rows from /api/chat are rebuilt from role/content."""
    turn_id: uuid.UUID | None = Field(default=None, sa_column=Column(Uuid, nullable=True))
    """The turn that wrote this row (its journal key)."""
    status: str = Field(
        default="done", sa_column=Column(String(16), nullable=False, server_default="done")
    )
    """`pending` (hidden: its turn has committed nothing yet), `running` (its turn's tools
    committed, the reply is not written yet), `done`, or `interrupted`."""
    created_at: datetime = Field(
        default_factory=utcnow,
        sa_column=Column(DateTime(timezone=True), nullable=False, server_default=func.now()),
    )
