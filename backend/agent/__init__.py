"""The agent: its task tools, the model providers (remote OpenAI-compatible or offline) and the factory."""
