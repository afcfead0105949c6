"""The process's one outbound HTTP stack: a pooled aiohttp session, created in the lifespan.

The model client, the Better Auth JWKS fetch and the MCP tool client all use it (chosen by
measurement, see bench/README.md: httpx's pool scans every connection per request, which at a
few hundred concurrent model calls cost more CPU than the turns themselves).
"""

from __future__ import annotations

import aiohttp

from backend.core.config import Settings


def create_http_session(settings: Settings) -> aiohttp.ClientSession:
    """Sized for every turn waiting on a slow model at once; each call bounds its own time."""
    connector = aiohttp.TCPConnector(
        limit=settings.llm_max_connections, limit_per_host=0, keepalive_timeout=30
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=settings.chat_timeout_seconds, connect=10),
        raise_for_status=False,
    )
