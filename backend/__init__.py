"""task-assistant: a stateless, JWT-authenticated task-assistant chat API on PostgreSQL."""
