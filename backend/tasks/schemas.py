"""Request and response bodies of the task API (and the task view the tools return)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class TaskStatus(StrEnum):
    all = "all"
    pending = "pending"
    completed = "completed"


class TaskCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str
    description: str | None = None


class TaskUpdate(BaseModel):
    """Only the fields present in the body change; `description: null` clears it."""

    model_config = ConfigDict(extra="forbid")

    title: str | None = None
    description: str | None = None
    completed: bool | None = None


class TaskRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    title: str
    description: str | None
    completed: bool
    created_at: datetime
    updated_at: datetime


class TaskList(BaseModel):
    tasks: list[TaskRead]
    next_cursor: int | None = Field(
        description="Pass as `after` for the next page; null at the end."
    )
