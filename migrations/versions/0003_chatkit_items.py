"""messages: ChatKit item ids and full items (thread item = message)

Every message gets an `item_id` (also those written by /api/chat), with 128 random bits;
ChatKit-only items (widgets, progress, hidden context) keep their JSON in `item`.

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "messages",
        sa.Column(
            "item_id",
            sa.String(length=64),
            server_default=sa.text("'msg_' || replace(gen_random_uuid()::text, '-', '')"),
            nullable=False,
        ),
    )
    op.add_column(
        "messages", sa.Column("item", postgresql.JSONB(astext_type=sa.Text()), nullable=True)
    )
    op.create_index("ix_messages_item_id", "messages", ["item_id"], unique=True)


def downgrade() -> None:
    op.drop_index("ix_messages_item_id", table_name="messages")
    op.drop_column("messages", "item")
    op.drop_column("messages", "item_id")
