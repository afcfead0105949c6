"""The web playground: a single page at `/` that chats with your tasks, and its dev sign-in."""
