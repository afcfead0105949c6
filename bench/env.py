"""The environment for service processes the benchmark and tests start."""

from __future__ import annotations

import os

# Settings that would point a child service at a real model, auth server or Redis.
_EXTERNAL = ("LLM_", "GEMINI_", "OPENAI_", "BETTER_AUTH", "JWT_", "REDIS_")


def isolated_env() -> dict[str, str]:
    """This process's environment without settings that reach outside the machine."""
    return {k: v for k, v in os.environ.items() if not k.startswith(_EXTERNAL)}
