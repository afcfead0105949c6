"""conversations: one running turn at a time (active_turn, active_turn_expires_at)

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("conversations", sa.Column("active_turn", sa.Uuid(), nullable=True))
    op.add_column(
        "conversations",
        sa.Column("active_turn_expires_at", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    op.drop_column("conversations", "active_turn_expires_at")
    op.drop_column("conversations", "active_turn")
