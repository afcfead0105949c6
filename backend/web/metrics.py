"""`GET /metrics`: the Prometheus text format, optionally behind `METRICS_TOKEN`.

Unset, the endpoint is open, as Prometheus expects of a scrape target on a private network. Set,
a scrape must send `Authorization: Bearer <METRICS_TOKEN>` (Prometheus: `authorization:
{credentials: …}` in the scrape config); anything else answers 401.
"""

from __future__ import annotations

import hmac
import os

from fastapi import APIRouter, Request, Response
from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    REGISTRY,
    CollectorRegistry,
    generate_latest,
    multiprocess,
)

from backend.core.errors import MissingToken, Unauthorized
from backend.observability import metrics
from backend.web.deps import StateDep
from backend.web.errors import error_responses

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

router = APIRouter(tags=["operations"])


@router.get(
    "/metrics",
    summary="Prometheus metrics (Bearer METRICS_TOKEN when that is set)",
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
    if state.settings.metrics_token:
        _check_token(request.headers.get("authorization"), state.settings.metrics_token)
    metrics.sample_pool(state.engine.sync_engine.pool)
    return Response(generate_latest(_registry()), media_type=CONTENT_TYPE_PLAIN_0_0_4)


def _check_token(header: str | None, expected: str) -> None:
    scheme, _, credentials = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        raise MissingToken("Missing metrics token")
    # Constant time, so the answer's timing says nothing about how much of a guess was right.
    if not hmac.compare_digest(credentials.strip().encode(), expected.encode()):
        raise Unauthorized("Invalid metrics token")


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
