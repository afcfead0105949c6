"""turn journal: messages.turn_id/status, conversations.listed, idempotency_keys.turn_id

A turn writes its user message and a reply placeholder when it starts (status `pending`,
hidden); each tool call commits with the task change it made (the reply becomes `running`);
the end of the turn writes the reply (`done`) or a note (`interrupted`). Conversations created
by a turn stay unlisted until that turn has committed something.

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("messages", sa.Column("turn_id", sa.Uuid(), nullable=True))
    op.add_column(
        "messages",
        sa.Column("status", sa.String(length=16), server_default="done", nullable=False),
    )
    op.create_index("ix_messages_turn_id", "messages", ["turn_id"], unique=False)
    op.add_column(
        "conversations",
        sa.Column("listed", sa.Boolean(), server_default=sa.text("true"), nullable=False),
    )
    op.add_column("idempotency_keys", sa.Column("turn_id", sa.Uuid(), nullable=True))


def downgrade() -> None:
    op.drop_column("idempotency_keys", "turn_id")
    op.drop_column("conversations", "listed")
    op.drop_index("ix_messages_turn_id", table_name="messages")
    op.drop_column("messages", "status")
    op.drop_column("messages", "turn_id")
