"""Tables behind rate limits and idempotency keys (shared state of all replicas)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Column, DateTime, Index, Integer, LargeBinary, String, Uuid
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel


class RateLimitState(SQLModel, table=True):
    """One row per user and budget: GCRA's theoretical arrival time (see reliability.ratelimit)."""

    __tablename__ = "rate_limits"

    user_id: str = Field(sa_column=Column(String(255), primary_key=True))
    budget: str = Field(sa_column=Column(String(16), primary_key=True))
    """`chat`, `write` or `read`."""
    tat: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    """The budget is spent until `tat - window`; a request fits when `tat + interval <= now + window`."""


class IdempotencyKey(SQLModel, table=True):
    """A request made with an Idempotency-Key, and once finished, the answer it got."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (Index("ix_idempotency_keys_expires_at", "expires_at"),)

    user_id: str = Field(sa_column=Column(String(255), primary_key=True))
    key: str = Field(sa_column=Column(String(255), primary_key=True))
    request_hash: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    status_code: int | None = Field(default=None, sa_column=Column(Integer, nullable=True))
    """NULL while the first request is still running."""
    response: Any = Field(default=None, sa_column=Column(JSONB, nullable=True))
    locked_until: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    """A running request's claim; after this a crashed request's key can be taken over."""
    expires_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    turn_id: uuid.UUID | None = Field(default=None, sa_column=Column(Uuid, nullable=True))
    """For chat turns: the turn this key ran, so a repeat after a crash finds what it committed."""
