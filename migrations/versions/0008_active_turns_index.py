"""an index of each user's running turns, counted by every claim (MAX_ACTIVE_TURNS_PER_USER)

Revision ID: 0008
Revises: 0007
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_conversations_active_turns",
        "conversations",
        ["user_id", "active_turn_expires_at"],
        postgresql_where=sa.text("active_turn IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_conversations_active_turns", table_name="conversations")
