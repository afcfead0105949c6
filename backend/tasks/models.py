"""The `tasks` and `task_counts` tables."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Identity,
    Integer,
    String,
    Text,
    func,
)
from sqlmodel import Field, SQLModel

from backend.core.timeutil import utcnow


class Task(SQLModel, table=True):
    __tablename__ = "tasks"

    id: int | None = Field(
        default=None, sa_column=Column(BigInteger, Identity(always=False), primary_key=True)
    )
    user_id: str = Field(sa_column=Column(String(255), nullable=False, index=True))
    title: str = Field(sa_column=Column(String(200), nullable=False))
    description: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    completed: bool = Field(
        default=False, sa_column=Column(Boolean, nullable=False, server_default="false")
    )
    created_at: datetime = Field(
        default_factory=utcnow,
        sa_column=Column(DateTime(timezone=True), nullable=False, server_default=func.now()),
    )
    updated_at: datetime = Field(
        default_factory=utcnow,
        sa_column=Column(DateTime(timezone=True), nullable=False, server_default=func.now()),
    )


class TaskCount(SQLModel, table=True):
    """How many tasks each user holds: the MAX_TASKS_PER_USER check reads and moves this row in
    the same statement as the insert or delete, so the cap is exact under concurrent creates.
    Kept by `tasks.service` alone (every task insert and delete goes through it)."""

    __tablename__ = "task_counts"
    __table_args__ = (CheckConstraint("tasks >= 0", name="tasks_not_negative"),)

    user_id: str = Field(sa_column=Column(String(255), primary_key=True))
    tasks: int = Field(sa_column=Column(Integer, nullable=False))
