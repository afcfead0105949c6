"""`GET /metrics`: the Prometheus text format, for the scraper only (unless the operator says so).

A scrape sends `Authorization: Bearer <METRICS_TOKEN>` (Prometheus: `authorization:
{credentials: …}` in the scrape config) and gets a fresh render. Anyone else gets 401, and learns
nothing about the process, unless METRICS_PUBLIC=true: then anonymous scrapes are answered too,
from a render at most `PUBLIC_RENDER_SECONDS` old, so a flood of them costs one render a second
(a render takes milliseconds of the event loop that every other request waits for). The
middleware turns away token-less scrapes before routing when METRICS_PUBLIC is off.
"""

from __future__ import annotations

import hmac
import os
import time
from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    REGISTRY,
    CollectorRegistry,
    generate_latest,
    multiprocess,
)

from backend.core.config import Settings
from backend.core.errors import MissingToken, Unauthorized
from backend.observability import metrics
from backend.web.deps import StateDep
from backend.web.errors import error_responses

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
PUBLIC_RENDER_SECONDS = 1.0
"""How old the render an anonymous scrape gets may be (METRICS_PUBLIC=true)."""
_public_render: tuple[float, bytes] = (float("-inf"), b"")

router = APIRouter(tags=["operations"])


@router.get(
    "/metrics",
    summary="Prometheus metrics (Bearer METRICS_TOKEN, unless METRICS_PUBLIC)",
    response_class=Response,
    responses={
        200: {
            "description": "Prometheus text exposition format 0.0.4",
            "content": {CONTENT_TYPE_PLAIN_0_0_4: {"schema": {"type": "string"}}},
        },
        **error_responses(401),
    },
)
async def prometheus_metrics(request: Request, state: StateDep) -> Response:
    pool = state.engine.sync_engine.pool
    if _token_holder(request.headers.get("authorization"), state.settings):
        return Response(_render(pool), media_type=CONTENT_TYPE_PLAIN_0_0_4)
    global _public_render
    rendered_at, body = _public_render
    now = time.monotonic()
    if now - rendered_at >= PUBLIC_RENDER_SECONDS:
        body = _render(pool)
        _public_render = (now, body)
    return Response(body, media_type=CONTENT_TYPE_PLAIN_0_0_4)


def _token_holder(header: str | None, settings: Settings) -> bool:
    """True for the scraper (METRICS_TOKEN), False for an anonymous caller METRICS_PUBLIC lets
    in; anyone else is refused (401)."""
    scheme, _, credentials = (header or "").partition(" ")
    token = credentials.strip() if scheme.lower() == "bearer" else ""
    if token and settings.metrics_token:
        # Constant time, so the answer's timing says nothing about how much of a guess was right.
        if hmac.compare_digest(token.encode(), settings.metrics_token.encode()):
            return True
        raise Unauthorized("Invalid metrics token")
    if settings.metrics_public:
        return False
    if not token:
        raise MissingToken("Missing metrics token")
    raise Unauthorized("Invalid metrics token")  # no METRICS_TOKEN: no token is right


def _render(pool: Any) -> bytes:
    metrics.sample_pool(pool)
    return generate_latest(_registry())


def _registry() -> CollectorRegistry:
    if os.environ.get(MULTIPROC_ENV):
        # Several workers: sum what every worker wrote under the shared directory.
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return registry
    return REGISTRY


def process_exiting() -> None:
    """At shutdown: drop this worker's live gauges (turns in progress, pool) from the sums."""
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]
