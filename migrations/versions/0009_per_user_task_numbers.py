"""per-user task numbers; every per-user key starts with user_id (distributable by user)

- tasks: the global `id` becomes `number`, each user's own sequence 1, 2, 3... in the order the
  tasks were made (row_number() over the user's tasks by id); primary key (user_id, number).
- task_counts: `last_number`, the user's highest number (the next task gets the one after it);
  the counts are recounted from the tasks present.
- conversations: primary key (user_id, id); messages: primary key (user_id, id), the foreign key
  to conversations (user_id, conversation_id), item ids unique per user (user_id, item_id).

Clients see the change: a task shown as "#57" before is shown by its number afterwards. Upgrade
with the old version stopped (it writes tasks without a number, which this schema refuses).

Downgrade gives tasks global ids again (in the order they were made, oldest first) and restores
the global keys; it stops, changing nothing, if two users now hold the same conversation id or
item id (possible only after the upgrade), since the global keys cannot hold both.

Revision ID: 0009
Revises: 0008
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # tasks: number each user's tasks in the order of their old ids.
    op.add_column("tasks", sa.Column("number", sa.BigInteger(), nullable=True))
    op.execute(
        """
        UPDATE tasks AS t SET number = n.number
          FROM (SELECT id, row_number() OVER (PARTITION BY user_id ORDER BY id) AS number
                  FROM tasks) AS n
         WHERE t.id = n.id
        """
    )
    op.alter_column("tasks", "number", nullable=False)
    op.drop_constraint("pk_tasks", "tasks", type_="primary")
    op.drop_index("ix_tasks_user_id", table_name="tasks")
    op.drop_column("tasks", "id")
    op.create_primary_key("pk_tasks", "tasks", ["user_id", "number"])

    # task_counts: each user's counter starts at their highest number (0 without tasks).
    op.add_column(
        "task_counts",
        sa.Column("last_number", sa.BigInteger(), server_default="0", nullable=False),
    )
    op.execute(
        """
        INSERT INTO task_counts AS c (user_id, tasks, last_number)
        SELECT user_id, count(*), max(number) FROM tasks GROUP BY user_id
        ON CONFLICT (user_id) DO UPDATE
           SET tasks = EXCLUDED.tasks, last_number = EXCLUDED.last_number
        """
    )

    # conversations and messages: keys that start with user_id.
    op.drop_constraint("fk_messages_conversation_id_conversations", "messages", type_="foreignkey")
    op.drop_constraint("pk_conversations", "conversations", type_="primary")
    op.create_primary_key("pk_conversations", "conversations", ["user_id", "id"])
    op.drop_constraint("pk_messages", "messages", type_="primary")
    op.create_primary_key("pk_messages", "messages", ["user_id", "id"])
    op.create_foreign_key(
        "fk_messages_user_id_conversations",
        "messages",
        "conversations",
        ["user_id", "conversation_id"],
        ["user_id", "id"],
        ondelete="CASCADE",
    )
    op.drop_index("ix_messages_item_id", table_name="messages")
    op.create_index("ix_messages_user_id_item_id", "messages", ["user_id", "item_id"], unique=True)


_SHARED_KEYS = """
    SELECT (SELECT count(*) FROM (SELECT id FROM conversations GROUP BY id
                                  HAVING count(*) > 1) AS c) AS conversations,
           (SELECT count(*) FROM (SELECT item_id FROM messages GROUP BY item_id
                                  HAVING count(*) > 1) AS m) AS items
"""


def downgrade() -> None:
    shared = op.get_bind().execute(sa.text(_SHARED_KEYS)).one()
    if shared.conversations or shared.items:
        raise RuntimeError(
            "Cannot downgrade 0009: "
            f"{shared.conversations} conversation id(s) and {shared.items} message item id(s) "
            "are each held by more than one user, which the global keys of 0008 cannot hold. "
            "Nothing was changed. Delete or re-key those rows first (SELECT id FROM "
            "conversations GROUP BY id HAVING count(*) > 1), or stay on 0009."
        )
    op.drop_index("ix_messages_user_id_item_id", table_name="messages")
    op.create_index("ix_messages_item_id", "messages", ["item_id"], unique=True)
    op.drop_constraint("fk_messages_user_id_conversations", "messages", type_="foreignkey")
    op.drop_constraint("pk_messages", "messages", type_="primary")
    op.create_primary_key("pk_messages", "messages", ["id"])
    op.drop_constraint("pk_conversations", "conversations", type_="primary")
    op.create_primary_key("pk_conversations", "conversations", ["id"])
    op.create_foreign_key(
        "fk_messages_conversation_id_conversations",
        "messages",
        "conversations",
        ["conversation_id"],
        ["id"],
        ondelete="CASCADE",
    )

    op.drop_column("task_counts", "last_number")

    # tasks: global ids again, oldest first; the identity continues after the highest.
    op.add_column("tasks", sa.Column("id", sa.BigInteger(), nullable=True))
    op.execute(
        """
        UPDATE tasks AS t SET id = n.id
          FROM (SELECT user_id, number,
                       row_number() OVER (ORDER BY created_at, user_id, number) AS id
                  FROM tasks) AS n
         WHERE t.user_id = n.user_id AND t.number = n.number
        """
    )
    op.alter_column("tasks", "id", nullable=False)
    op.execute("ALTER TABLE tasks ALTER COLUMN id ADD GENERATED BY DEFAULT AS IDENTITY")
    op.execute(
        "SELECT setval(pg_get_serial_sequence('tasks', 'id'), "
        "COALESCE((SELECT max(id) FROM tasks), 0) + 1, false)"
    )
    op.drop_constraint("pk_tasks", "tasks", type_="primary")
    op.drop_column("tasks", "number")
    op.create_primary_key("pk_tasks", "tasks", ["id"])
    op.create_index("ix_tasks_user_id", "tasks", ["user_id"], unique=False)
