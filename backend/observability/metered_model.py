"""`MeteredModel`: wraps the agent's model to time every call and count its tokens.

At the `Model` interface rather than inside one provider adapter, so every path is measured the
same way: the lean Chat Completions model, the SDK's streaming model, the offline model and the
test doubles; `/api/chat` and ChatKit turns alike.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from agents import Model, ModelResponse
from agents.items import TResponseStreamEvent

from backend.observability import metrics


class MeteredModel(Model):
    def __init__(self, inner: Model) -> None:
        self.inner = inner

    async def get_response(self, *args: Any, **kwargs: Any) -> ModelResponse:
        started = time.perf_counter()
        try:
            response = await self.inner.get_response(*args, **kwargs)
        except BaseException as exc:
            metrics.model_call(metrics.outcome_of(exc), time.perf_counter() - started)
            raise
        metrics.model_call("ok", time.perf_counter() - started)
        metrics.tokens(response.usage.input_tokens, response.usage.output_tokens)
        return response

    async def stream_response(
        self, *args: Any, **kwargs: Any
    ) -> AsyncIterator[TResponseStreamEvent]:
        started = time.perf_counter()
        error: BaseException | None = None
        try:
            async for event in self.inner.stream_response(*args, **kwargs):
                if event.type == "response.completed" and event.response.usage is not None:
                    usage = event.response.usage
                    metrics.tokens(usage.input_tokens, usage.output_tokens)
                yield event
        except BaseException as exc:  # GeneratorExit too: the run stopped reading (cancelled)
            error = exc
            raise
        finally:
            outcome = "cancelled" if isinstance(error, GeneratorExit) else metrics.outcome_of(error)
            metrics.model_call(outcome, time.perf_counter() - started)

    def get_retry_advice(self, request: Any) -> Any:
        return self.inner.get_retry_advice(request)

    async def _cleanup_on_run_end(self, owner: object) -> None:
        await self.inner._cleanup_on_run_end(owner)

    async def close(self) -> None:
        await self.inner.close()
