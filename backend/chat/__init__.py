"""Chat: conversations, their messages, the history window and the chat turn."""
