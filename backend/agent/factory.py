"""Builds the model and the agent once per process (in the lifespan) and shares them across turns.

The agent holds no per-user state: the user reaches the tools only through the run context.
"""

from __future__ import annotations

import logging

import aiohttp
from agents import Agent, Model, set_tracing_disabled

from backend.agent.chat_model import ChatCompletionsModel
from backend.agent.context import TurnContext
from backend.agent.prompts import DEFAULT_INSTRUCTIONS
from backend.agent.tools import Executor, in_process, task_tools
from backend.core.config import OPENAI_BASE_URL, Settings

log = logging.getLogger(__name__)


def build_model(settings: Settings, http: aiohttp.ClientSession) -> Model:
    """The configured Chat Completions model, or the built-in offline one when none is set."""
    if not settings.uses_remote_model:
        from backend.agent.offline import OfflineModel

        return OfflineModel()
    return ChatCompletionsModel(
        settings.model_name,
        base_url=settings.model_base_url or OPENAI_BASE_URL,
        api_key=settings.model_api_key or "not-needed",
        http=http,
        max_retries=settings.llm_max_retries,
    )


def configure_tracing(settings: Settings) -> None:
    # Tracing exports to OpenAI; without an OpenAI key it only logs errors and wastes time.
    set_tracing_disabled(not settings.openai_api_key)


def _executor(settings: Settings, http: aiohttp.ClientSession) -> Executor:
    if settings.tools_transport == "mcp":
        from backend.agent.mcp_tools import McpToolClient

        assert settings.mcp_server_url is not None
        log.info("agent tools run on the MCP server at %s", settings.mcp_server_url)
        return McpToolClient(settings.mcp_server_url, http)
    return in_process


def build_agent(
    settings: Settings, model: Model, http: aiohttp.ClientSession
) -> Agent[TurnContext]:
    return Agent[TurnContext](
        name="Task assistant",
        instructions=settings.agent_instructions or DEFAULT_INSTRUCTIONS,
        model=model,
        tools=list(task_tools(_executor(settings, http), settings.max_tool_output_chars)),
    )
