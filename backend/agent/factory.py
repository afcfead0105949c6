"""Builds the model and the agent once per process (in the lifespan) and shares them across turns.

The agent holds no per-user state: the user reaches the tools only through the run context.
"""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
import httpx2
from agents import Agent, Model, OpenAIChatCompletionsModel, set_tracing_disabled
from openai import AsyncOpenAI

from backend.agent.chat_model import LeanChatCompletionsModel
from backend.agent.context import TurnContext
from backend.agent.lean_client import LeanChatCompletionsClient
from backend.agent.prompts import DEFAULT_INSTRUCTIONS
from backend.agent.tools import Executor, in_process, task_tools
from backend.config import Settings

log = logging.getLogger(__name__)


def build_openai_client(settings: Settings) -> AsyncOpenAI | None:
    """One shared client for the whole process, or None for the offline model."""
    if not settings.uses_remote_model:
        return None
    limits = httpx2.Limits(
        max_connections=settings.llm_max_connections,
        max_keepalive_connections=min(settings.llm_max_connections, 100),
    )
    return AsyncOpenAI(
        base_url=settings.model_base_url,
        api_key=settings.model_api_key or "not-needed",
        max_retries=settings.llm_max_retries,
        timeout=settings.chat_timeout_seconds,
        # openai 3.x runs on httpx2; a pool big enough for every turn waiting on a slow model.
        http_client=httpx2.AsyncClient(limits=limits, timeout=settings.chat_timeout_seconds),
    )


def build_model(settings: Settings, client: AsyncOpenAI | None) -> Model:
    if client is None:
        from backend.agent.offline import OfflineModel

        return OfflineModel()
    lean: Any = LeanChatCompletionsClient(client)
    streaming = OpenAIChatCompletionsModel(model=settings.model_name, openai_client=lean)
    http = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=settings.llm_max_connections),
        timeout=aiohttp.ClientTimeout(total=settings.chat_timeout_seconds),
    )
    return LeanChatCompletionsModel(
        settings.model_name,
        base_url=str(client.base_url),
        api_key=client.api_key,
        http=http,
        streaming=streaming,
        max_retries=settings.llm_max_retries,
    )


def configure_tracing(settings: Settings) -> None:
    # Tracing exports to OpenAI; without an OpenAI key it only logs errors and wastes time.
    set_tracing_disabled(not settings.openai_api_key)


def _executor(settings: Settings) -> Executor:
    if settings.tools_transport == "mcp":
        from backend.agent.mcp_tools import McpToolClient

        assert settings.mcp_server_url is not None
        log.info("agent tools run on the MCP server at %s", settings.mcp_server_url)
        return McpToolClient(settings.mcp_server_url)
    return in_process


def build_agent(settings: Settings, model: Model) -> Agent[TurnContext]:
    return Agent[TurnContext](
        name="Task assistant",
        instructions=settings.agent_instructions or DEFAULT_INSTRUCTIONS,
        model=model,
        tools=list(task_tools(_executor(settings), settings.max_tool_output_chars)),
    )
