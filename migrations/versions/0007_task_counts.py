"""task_counts holds each user's number of tasks, for an exact MAX_TASKS_PER_USER in one statement

Filled from the tasks present. Upgrade with the old version stopped (or accept that tasks
created between this migration and the new version's start are not counted: the cap is then
that many tasks lenient for those users until they delete some).

Revision ID: 0007
Revises: 0006
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "task_counts",
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("tasks", sa.Integer(), nullable=False),
        sa.CheckConstraint("tasks >= 0", name=op.f("ck_task_counts_tasks_not_negative")),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_task_counts")),
    )
    op.execute(
        "INSERT INTO task_counts (user_id, tasks) SELECT user_id, count(*) FROM tasks GROUP BY user_id"
    )


def downgrade() -> None:
    op.drop_table("task_counts")
