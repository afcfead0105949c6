"""The load generator's side of HTTP: a user's turns (plain, streamed or through ChatKit) and
reads, over one aiohttp session, with real EdDSA tokens; what they took and how they failed."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from backend.auth.devkeys import load_or_create_dev_key, mint_token


@dataclass
class Run:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    events: int = 0
    """Server-Sent Events received (streamed and ChatKit turns)."""

    def error(self, sample: str) -> None:
        self.errors += 1
        self.error_samples.append(sample)


KINDS = ("plain", "stream", "chatkit")
"""How a turn is sent: `POST /api/chat`, the same with `"stream": true`, or `/api/chatkit`."""


def percentile(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def sse_events(raw: bytes) -> list[dict[str, Any]]:
    return [
        json.loads(line[6:])
        for line in raw.split(b"\n")
        if line.startswith(b"data: ") and line.strip() != b"data: [DONE]"
    ]


def chatkit_input(text: str) -> dict[str, Any]:
    """ChatKit's `UserMessageInput` (chatkit.types), as its client sends it."""
    return {
        "content": [{"type": "input_text", "text": text}],
        "attachments": [],
        "inference_options": {},
    }


def turn_request(message: str, conversation: str | None, kind: str) -> tuple[str, dict[str, Any]]:
    """The path and body of one turn of `kind`."""
    body: dict[str, Any] = {"message": message, "conversation_id": conversation}
    if kind == "stream":
        body["stream"] = True
    elif kind == "chatkit":
        if conversation is None:
            return "/api/chatkit", {
                "type": "threads.create",
                "params": {"input": chatkit_input(message)},
            }
        params = {"thread_id": conversation, "input": chatkit_input(message)}
        return "/api/chatkit", {"type": "threads.add_user_message", "params": params}
    return "/api/chat", body


def turn_conversation(run: Run, raw: bytes, conversation: str | None, kind: str) -> str | None:
    """The conversation (or ChatKit thread) a turn's answer `raw` went to; an error on `run`
    if the answer is not a whole turn."""
    if kind == "plain":
        return str(json.loads(raw)["conversation_id"])
    events = sse_events(raw)
    run.events += len(events)
    if kind == "stream":
        if not events or events[-1]["type"] != "done":
            run.error(f"stream ended with {events[-1:]!r:.160}")
            return conversation
        return str(events[-1]["conversation_id"])
    if any(e["type"] == "error" for e in events) or not any(
        e["type"] == "thread.item.done" and e["item"]["type"] == "assistant_message" for e in events
    ):
        run.error(f"chatkit turn without a reply: {[e['type'] for e in events]!r:.160}")
        return conversation
    if conversation is None:
        if events[0]["type"] != "thread.created":
            run.error(f"threads.create began with {events[0]['type']}")
            return None
        return str(events[0]["thread"]["id"])
    return conversation


class Client:
    """Users of the service at `base`, and the latency of the stub model at `stub`."""

    def __init__(self, base: str, stub: str, data_dir: Path) -> None:
        self.base = base
        self.stub = stub
        self.key = load_or_create_dev_key(data_dir)
        # aiohttp, not httpx: httpcore's pool costs O(connections) per request, and the load
        # generator shares this machine's two cores with the server.
        self.http: aiohttp.ClientSession | None = None

    def headers(self, user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {mint_token(self.key, user)}"}

    async def latency(self, ms: float) -> None:
        async with self.session().put(f"{self.stub}/_control", json={"latency_ms": ms}) as r:
            r.raise_for_status()

    def session(self) -> aiohttp.ClientSession:
        if self.http is None:
            self.http = aiohttp.ClientSession(
                base_url=self.base,
                # Idle connections are dropped before uvicorn's keep-alive timeout (5 s) closes
                # them: a request sent on a connection the server is closing at that moment
                # fails (ServerDisconnectedError), and the rounds leave each server idle for
                # seconds at a time.
                connector=aiohttp.TCPConnector(limit=500, keepalive_timeout=2),
                timeout=aiohttp.ClientTimeout(total=60),
            )
        return self.http

    async def close(self) -> None:
        """Close the session; the next `session()` opens a new one (on the running loop)."""
        if self.http is not None:
            await self.http.close()
            self.http = None

    async def request(
        self, run: Run, method: str, path: str, headers: dict[str, str], **kwargs: Any
    ) -> tuple[int, bytes] | None:
        """One request, read to its end and timed on `run`; None (an error on `run`) if it failed."""
        started = time.perf_counter()
        try:
            async with self.session().request(method, path, headers=headers, **kwargs) as r:
                status, raw = r.status, await r.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            run.error(type(exc).__name__)
            return None
        run.latencies.append((time.perf_counter() - started) * 1000)
        return status, raw

    async def turn(
        self,
        run: Run,
        headers: dict[str, str],
        message: str,
        conversation: str | None,
        kind: str = "plain",
    ) -> str | None:
        """One turn, read to its end; the conversation (or ChatKit thread) it went to."""
        path, body = turn_request(message, conversation, kind)
        answer = await self.request(run, "POST", path, headers, json=body)
        if answer is None:
            return conversation
        status, raw = answer
        if status != 200:
            run.error(f"{status} {raw[:120]!r}")
            return conversation
        return turn_conversation(run, raw, conversation, kind)

    async def user(self, run: Run, name: str, turns: int, kind: str = "plain") -> None:
        headers = self.headers(name)
        conversation = None
        for n in range(turns):
            conversation = await self.turn(run, headers, f"{name} task {n}", conversation, kind)

    async def get(self, run: Run, path: str, headers: dict[str, str]) -> int:
        answer = await self.request(run, "GET", path, headers)
        if answer is None:
            return 0
        if answer[0] != 200:
            run.error(f"GET {path} {answer[0]}")
        return answer[0]

    async def check_tasks(self, users: int, turns: int, prefix: str) -> int:
        """How many of the users `<prefix>-<n>` do not have exactly the tasks of their turns."""
        wrong = 0
        for u in range(users):
            name = f"{prefix}-{u}"
            async with self.session().get(
                "/api/tasks", params={"limit": 100}, headers=self.headers(name)
            ) as r:
                tasks = (await r.json())["tasks"]
            if sorted(t["title"] for t in tasks) != sorted(
                f"{name} task {n}" for n in range(turns)
            ):
                wrong += 1
        return wrong
