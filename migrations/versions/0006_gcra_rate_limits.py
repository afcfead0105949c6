"""rate_limits keeps one GCRA timestamp per user and budget (chat, write, read)

The fixed-window counters are dropped, not converted: losing them lets each user at most one
fresh burst after the upgrade.

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_table("rate_limits")
    op.create_table(
        "rate_limits",
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("budget", sa.String(length=16), nullable=False),
        sa.Column("tat", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("user_id", "budget", name=op.f("pk_rate_limits")),
    )


def downgrade() -> None:
    op.drop_table("rate_limits")
    op.create_table(
        "rate_limits",
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_rate_limits")),
    )
