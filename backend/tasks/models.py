"""The `tasks` and `task_counts` tables.

Every key starts with `user_id`, so the tables can be distributed by user (docs/distribution.md).
A task's number is its id as every client sees it: 1, 2, 3... in each user's own sequence, from
the user's `task_counts.last_number` (a deleted number is not reused).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Integer,
    String,
    Text,
    func,
)
from sqlmodel import Field, SQLModel

from backend.core.timeutil import utcnow


class Task(SQLModel, table=True):
    __tablename__ = "tasks"

    user_id: str = Field(sa_column=Column(String(255), primary_key=True))
    id: int | None = Field(
        default=None, sa_column=Column("number", BigInteger, primary_key=True, autoincrement=False)
    )
    """The task's number in its user's sequence (the column `number`): the `id` clients see."""
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
    """How many tasks each user holds, and the last number given: the MAX_TASKS_PER_USER check
    reads and moves this row in the same statement as the insert or delete, so the cap is exact
    under concurrent creates and two creates never take the same number. Kept by `tasks.service`
    alone (every task insert and delete goes through it); the row stays when the count is 0."""

    __tablename__ = "task_counts"
    __table_args__ = (CheckConstraint("tasks >= 0", name="tasks_not_negative"),)

    user_id: str = Field(sa_column=Column(String(255), primary_key=True))
    tasks: int = Field(sa_column=Column(Integer, nullable=False))
    last_number: int = Field(
        default=0, sa_column=Column(BigInteger, nullable=False, server_default="0")
    )
    """The number of the user's newest task, deleted or not: the next one is this plus one."""
