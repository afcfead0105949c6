"""The development sign-in as the tests reach it: its endpoint, the start log's playground line
(with the start's secret), and a client that reaches an app from a given address with the secret."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI

from backend.auth.devkeys import load_or_create_dev_key
from backend.auth.devlogin import login_secret
from backend.web.devtoken import LOGIN_HEADER
from backend.web.state import STATE_KEY
from tests.support.app import with_lifespan_state

TOKEN_PATH = "/api/dev/token"
PLAYGROUND = re.compile(r"playground: (http://\S+)/\?login=([A-Za-z0-9_-]+) ")
"""The start log's playground line: the address and the start's sign-in secret."""


@asynccontextmanager
async def reached_at(app: FastAPI, base_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client whose requests reach `app` with `base_url`'s host as the ASGI `server`."""
    async with app.router.lifespan_context(app) as state:
        transport = httpx.ASGITransport(app=with_lifespan_state(app, state))
        key = load_or_create_dev_key(state[STATE_KEY].settings.data_dir)
        login = {LOGIN_HEADER: login_secret(key)}  # the secret the start log prints
        async with httpx.AsyncClient(
            transport=transport, base_url=base_url, headers=login
        ) as client:
            yield client
