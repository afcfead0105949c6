"""The built-in offline model: the default when no LLM key is set, so `make run` can chat.

It implements the Agents SDK `Model` interface and drives the same tools through the same
`Runner` as a real model; its decisions come from `offline_intents.plan`. Each call builds its
response (and, for streaming, the Responses stream events) with the SDK's own ScriptedModel,
so the events are exactly what the runner and ChatKit expect. It is not an LLM, and says so.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from typing import Any

from agents import Model, ModelResponse, Usage
from agents.items import TResponseStreamEvent
from agents.testing import ScriptedModel, assistant_message, function_call

from backend.agent.offline_intents import plan
from backend.config import OFFLINE_MODEL_NAME

_call_ids = itertools.count(1)


class OfflineModel(Model):
    name = OFFLINE_MODEL_NAME

    def _script(self, input: Any) -> ScriptedModel:
        items = [{"role": "user", "content": input}] if isinstance(input, str) else list(input)
        step = plan(items)
        if step.calls:
            outputs: list[Any] = [
                function_call(name, args, call_id=f"call_offline_{next(_call_ids)}")
                for name, args in step.calls
            ]
        else:
            outputs = [assistant_message(step.text, item_id=f"msg_offline_{next(_call_ids)}")]
        words = sum(len(str(i.get("content", "")).split()) for i in items if isinstance(i, dict))
        return ScriptedModel(
            [outputs],
            default_usage=Usage(
                requests=1, input_tokens=words, output_tokens=len(step.text.split())
            ),
        )

    async def get_response(
        self, system_instructions: Any, input: Any, *args: Any, **kwargs: Any
    ) -> ModelResponse:
        return await self._script(input).get_response(system_instructions, input, *args, **kwargs)

    async def stream_response(
        self, system_instructions: Any, input: Any, *args: Any, **kwargs: Any
    ) -> AsyncIterator[TResponseStreamEvent]:
        async for event in self._script(input).stream_response(
            system_instructions, input, *args, **kwargs
        ):
            yield event
