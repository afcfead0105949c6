"""`make bench`: the service under load on this machine, against a local stub model.

Starts a PostgreSQL (embedded, or a fresh database on BENCH_DATABASE_URL's server), the
OpenAI-compatible stub (`bench.stub_llm`, its own process) and the service under uvicorn, once
per `--workers` count (by default one server with 1 worker and one with 2, both up for the whole
run; their CPU time and memory, summed over the uvicorn supervisor and its workers, are read from
/proc), then drives them over real HTTP with real EdDSA tokens. See bench/README.md for the
workloads and targets.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import functools
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import psycopg

from backend.auth.devkeys import load_or_create_dev_key, mint_token
from backend.chat.history import count_tokens
from backend.server.cli import migrate
from backend.core.config import normalize_database_url
from bench.env import isolated_env

ROOT = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Sizes:
    w2_users: int = 20
    w2_turns: int = 10
    """Per user, in one conversation (thread); also W5's and W6's."""
    rounds: int = 5
    """W2, W5 and W6 take turns in this many rounds (w2_turns / rounds turns per user each)."""
    w3_users: int = 100
    w3_turns: int = 2
    w3_latency_ms: float = 500
    w4_long: int = 400
    w4_full: int = 120
    """Above HISTORY_MAX_MESSAGES (100): the window is already full."""
    w4_short: int = 10
    w4_samples: int = 40
    """Turns per history length, in four interleaved batches, each in a freshly seeded conversation."""
    w7_tasks: int = 1000
    """The noisy user's tasks: MAX_TASKS_PER_USER (its default), every one of maximum size."""
    w7_turners: int = 10
    w7_streams: int = 15
    w7_quiet_gets: int = 100
    w7_quiet_turns: int = 8
    """Per phase; both phases together stay under the default 20 turns per minute."""
    w7_latency_ms: float = 250
    warmup: int = 60


SMOKE = Sizes(
    w2_users=3,
    w2_turns=2,
    rounds=2,
    w3_users=4,
    w3_turns=1,
    w3_latency_ms=50,
    w4_long=40,
    w4_full=20,
    w4_short=10,
    w4_samples=4,
    w7_tasks=60,
    w7_turners=2,
    w7_streams=2,
    w7_quiet_gets=5,
    w7_quiet_turns=2,
    w7_latency_ms=20,
    warmup=2,
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants (uvicorn's supervisor, its workers, their helpers)."""
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            with contextlib.suppress(OSError):
                todo.extend(int(c) for c in (task / "children").read_text().split())
    return pids


def worker_pids(pid: int) -> list[int]:
    """The processes that serve requests: uvicorn's spawned workers, or `pid` itself."""
    spawned = []
    for p in process_tree(pid)[1:]:
        with contextlib.suppress(OSError):
            if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes():
                spawned.append(p)
    return spawned or [pid]


def _cpu_ms(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:  # exited meanwhile
        return 0.0
    return (int(fields[11]) + int(fields[12])) * 1000 / TICKS  # utime + stime


def cpu_ms(pid: int) -> float:
    """CPU time of the service: `pid` and every process under it."""
    return sum(_cpu_ms(p) for p in process_tree(pid))


def _rss_mb(pid: int) -> float:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def rss_mb(pid: int) -> float:
    """Resident memory of the service: `pid` and every process under it."""
    return sum(_rss_mb(p) for p in process_tree(pid))


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) clock ticks over all CPUs since boot: everything on the machine."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def percentile(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def database_server(tmp: Path) -> str:
    """BENCH_DATABASE_URL's server, or an embedded PostgreSQL (started on first use)."""
    server = os.environ.get("BENCH_DATABASE_URL")
    if server:
        return normalize_database_url(server).replace("postgresql+psycopg://", "postgresql://", 1)
    from backend.core.embedded import embedded_database_url

    return embedded_database_url(tmp).replace("postgresql+psycopg://", "postgresql://", 1)


@contextmanager
def database(tmp: Path, source: Path | None = None) -> Any:
    """A fresh database on `database_server`, migrated by this tree (or by `source`'s tree)."""
    server = database_server(tmp)
    name = "bench_" + secrets.token_hex(4)
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base, _, query = server.partition("?")
    url = base.rsplit("/", 1)[0] + "/" + name + (("?" + query) if query else "")
    try:
        if source is None:
            migrate(normalize_database_url(url))
        else:  # the baseline's own migrations, run by its own alembic env
            env = {**isolated_env(), "DATABASE_URL": url, "PYTHONPATH": str(source)}
            alembic = [sys.executable, "-m", "alembic", "upgrade", "head"]
            subprocess.run(alembic, cwd=source, env=env, check=True, stdout=subprocess.DEVNULL)
        yield url
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if source is None and not os.environ.get("BENCH_DATABASE_URL"):
            # Stop the embedded server now: its atexit hook runs after `tmp` is deleted, when
            # `pg_ctl stop` can no longer find the data directory and postgres lingers.
            from backend.core.embedded import stop_embedded

            stop_embedded(tmp)


def start(
    cmd: list[str], env: dict[str, str], stack: ExitStack, cwd: Path = ROOT
) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(cmd, env=env, cwd=cwd)

    def stop() -> None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()

    stack.callback(stop)
    return proc


def serve(
    env: dict[str, str], port: int, stack: ExitStack, workers: int = 1, source: Path = ROOT
) -> subprocess.Popen[bytes]:
    """The service (from the tree at `source`) with `workers` uvicorn workers on `port`, up and
    answering /health."""
    server = start(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "backend.main:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        {**env, "PYTHONPATH": str(source)} if source != ROOT else env,
        stack,
        source,
    )
    wait_http(f"http://127.0.0.1:{port}/health", server)
    return server


def baseline_tree(rev: str, into: Path) -> Path:
    """The files of git revision `rev` of this repository, extracted into `into`."""
    into.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", rev],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process for {url} exited with {proc.returncode}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


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


@dataclass
class Load:
    """One workload on one server, accumulated over its rounds."""

    kind: str
    prefix: str
    users: int
    run: Run = field(default_factory=Run)
    conversations: dict[str, str | None] = field(default_factory=dict)
    turns_per_user: int = 0
    wall: float = 0.0
    cpu: float = 0.0
    rss_peak: float = 0.0
    other_cpu: dict[str, float] = field(default_factory=dict)
    """CPU ms of the bench's other processes (PostgreSQL, the stub, the load generator)."""
    machine: list[int] = field(default_factory=lambda: [0, 0])
    """Busy and total ticks of the whole machine (other agents' work included)."""
    round_cpu: list[float] = field(default_factory=list)
    """Server CPU ms per turn in each round."""

    @property
    def turns(self) -> int:
        return self.users * self.turns_per_user


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


class Bench:
    def __init__(self, base: str, stub: str, pid: int, data_dir: Path, db_url: str) -> None:
        self.base = base
        self.stub = stub
        self.pid = pid
        self.key = load_or_create_dev_key(data_dir)
        self.db_url = db_url
        # aiohttp, not httpx: httpcore's pool costs O(connections) per request, and the load
        # generator shares this machine's two cores with the server.
        self.http: aiohttp.ClientSession | None = None
        self.worker_pids: list[int] = []
        self.profile_dir: Path | None = None
        self.others: dict[str, Callable[[], float]] = {
            "load_generator": functools.partial(_cpu_ms, os.getpid())  # not its children
        }
        """CPU ms of the processes reported next to the server (main adds the stub, PostgreSQL)."""

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

    async def turn(
        self,
        run: Run,
        headers: dict[str, str],
        message: str,
        conversation: str | None,
        kind: str = "plain",
    ) -> str | None:
        """One turn, read to its end; the conversation (or ChatKit thread) it went to."""
        path, body = "/api/chat", {"message": message, "conversation_id": conversation}
        if kind == "stream":
            body["stream"] = True
        elif kind == "chatkit":
            path = "/api/chatkit"
            if conversation is None:
                body = {"type": "threads.create", "params": {"input": chatkit_input(message)}}
            else:
                params = {"thread_id": conversation, "input": chatkit_input(message)}
                body = {"type": "threads.add_user_message", "params": params}
        started = time.perf_counter()
        try:
            async with self.session().post(path, json=body, headers=headers) as r:
                status, raw = r.status, await r.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            run.error(type(exc).__name__)
            return conversation
        run.latencies.append((time.perf_counter() - started) * 1000)
        if status != 200:
            run.error(f"{status} {raw[:120]!r}")
            return conversation
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
            e["type"] == "thread.item.done" and e["item"]["type"] == "assistant_message"
            for e in events
        ):
            run.error(f"chatkit turn without a reply: {[e['type'] for e in events]!r:.160}")
            return conversation
        if conversation is None:
            if events[0]["type"] != "thread.created":
                run.error(f"threads.create began with {events[0]['type']}")
                return None
            return str(events[0]["thread"]["id"])
        return conversation

    async def user(self, run: Run, name: str, turns: int, kind: str = "plain") -> None:
        headers = self.headers(name)
        conversation = None
        for n in range(turns):
            conversation = await self.turn(run, headers, f"{name} task {n}", conversation, kind)

    async def load_round(self, load: Load, turns: int) -> None:
        """`turns` more turns for each of the load's users, in their own conversations."""
        first = load.turns_per_user

        async def user(name: str) -> None:
            headers = self.headers(name)
            for n in range(first, first + turns):
                load.conversations[name] = await self.turn(
                    load.run, headers, f"{name} task {n}", load.conversations.get(name), load.kind
                )

        peak = [rss_mb(self.pid)]

        async def sample() -> None:
            while True:
                peak.append(rss_mb(self.pid))
                await asyncio.sleep(0.05)

        sampler = asyncio.create_task(sample())
        profiler = self.start_profiler(load.prefix)
        others0 = {name: meter() for name, meter in self.others.items()}
        busy0, total0 = machine_jiffies()
        cpu0, t0 = cpu_ms(self.pid), time.perf_counter()
        await asyncio.gather(*(user(f"{load.prefix}-{u}") for u in range(load.users)))
        load.wall += time.perf_counter() - t0
        spent = cpu_ms(self.pid) - cpu0
        load.cpu += spent
        load.round_cpu.append(spent / (load.users * turns))
        busy, total = machine_jiffies()
        load.machine[0] += busy - busy0
        load.machine[1] += total - total0
        for name, meter in self.others.items():
            load.other_cpu[name] = load.other_cpu.get(name, 0) + meter() - others0[name]
        sampler.cancel()
        stop_profiler(profiler)
        load.turns_per_user += turns
        load.rss_peak = max(load.rss_peak, *peak)

    def start_profiler(self, name: str) -> subprocess.Popen[bytes] | None:
        """With --profile: py-spy sampling the server (every worker) into `<dir>/<name>.<n>.txt`."""
        if self.profile_dir is None:
            return None
        out = self.profile_dir / f"{name}.{len(list(self.profile_dir.glob(name + '.*.txt')))}.txt"
        proc = subprocess.Popen(
            [
                *(
                    str(py_spy()),
                    "record",
                    "--pid",
                    str(self.pid),
                    "--subprocesses",
                    "--nonblocking",
                ),
                *("--format", "raw", "--rate", "200", "--output", str(out)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.5)  # attached before the first turn
        return proc

    async def warm_up(self, users: int, workers: int) -> None:
        """Every worker started (idle: its imports and start-up done), then some turns of each kind.

        /health answers as soon as one worker is up; first requests pay for imports and
        connections.
        """
        deadline, idle = time.monotonic() + 120, 0
        while idle < 3:
            pids = worker_pids(self.pid)
            before = sum(_cpu_ms(p) for p in pids)
            await asyncio.sleep(0.3)
            started = workers == 1 or len(pids) == workers
            idle = idle + 1 if started and sum(_cpu_ms(p) for p in pids) - before < 15 else 0
            if time.monotonic() > deadline:
                raise RuntimeError(f"{workers} workers did not settle: {pids}")
        warm = Run()
        await asyncio.gather(
            *(
                self.user(warm, f"warm-{kind}-{u}", 2, kind)
                for kind in KINDS
                for u in range(max(1, users // 2))
            )
        )
        if warm.errors:
            raise RuntimeError(f"warm-up errors: {warm.error_samples[:3]}")
        self.worker_pids = worker_pids(self.pid)

    def worker_restarts(self) -> int:
        """Workers replaced since the warm-up (uvicorn kills one that misses its health check)."""
        return len(set(self.worker_pids) - set(worker_pids(self.pid)))

    async def check_tasks(self, users: int, turns: int, prefix: str) -> int:
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

    def seed_conversations(self, user: str, messages: int, count: int) -> list[str]:
        """`count` conversations with `messages` stored messages shaped like real tool-calling turns."""
        cids = [uuid.uuid4() for _ in range(count)]
        turns = []
        for n in range(messages // 2):
            question = f"{user} earlier task {n}"
            call_id = f"call_seed_{n}"
            result = {"task_id": n + 1, "status": "created", "title": question}
            items = [
                {
                    "type": "function_call",
                    "call_id": call_id,
                    "name": "add_task",
                    "arguments": json.dumps({"title": question}),
                },
                {
                    "type": "function_call_output",
                    "call_id": call_id,
                    "output": json.dumps(result),
                },
                {
                    "type": "message",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": "Done: added it."}],
                },
            ]
            calls = [{"tool": "add_task", "arguments": {"title": question}, "result": result}]
            turns.append((user, "user", question, None, None, count_tokens(question)))
            turns.append(
                (
                    user,
                    "assistant",
                    "Done: added it.",
                    json.dumps(calls),
                    json.dumps(items),
                    count_tokens("Done: added it.", items),
                )
            )
        rows = [(cid, *row) for cid in cids for row in turns]
        with psycopg.connect(self.db_url) as conn, conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO conversations (id, user_id, title) VALUES (%s, %s, 'long')",
                [(cid, user) for cid in cids],
            )
            cur.executemany(
                "INSERT INTO messages (conversation_id, user_id, role, content, tool_calls, items, token_count) "
                "VALUES (%s, %s, %s, %s, %s::jsonb, %s::jsonb, %s)",
                rows,
            )
        return [str(cid) for cid in cids]

    def seed_tasks(self, user: str, count: int) -> None:
        """`count` tasks of maximum size (200-character title, 2,000-character description)."""
        rows = [(user, f"{n:05d} " + "t" * 194, "d" * 2000) for n in range(count)]
        with psycopg.connect(self.db_url) as conn, conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO tasks (user_id, title, description) VALUES (%s, %s, %s)", rows
            )
            # The count the MAX_TASKS_PER_USER check reads (the service keeps it; this bypasses it).
            cur.execute(
                "INSERT INTO task_counts (user_id, tasks) VALUES (%s, %s) ON CONFLICT (user_id) "
                "DO UPDATE SET tasks = task_counts.tasks + EXCLUDED.tasks",
                (user, count),
            )

    async def get(self, run: Run, path: str, headers: dict[str, str]) -> int:
        started = time.perf_counter()
        try:
            async with self.session().get(path, headers=headers) as r:
                status = r.status
                await r.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            run.errors += 1
            run.error_samples.append(type(exc).__name__)
            return 0
        run.latencies.append((time.perf_counter() - started) * 1000)
        if status != 200:
            run.errors += 1
            run.error_samples.append(f"GET {path} {status}")
        return status

    async def quiet_user(self, gets: Run, turns: Run, sizes: Sizes) -> None:
        """The second user: its task list every 50 ms, and chat turns one after another."""
        headers = self.headers("w7-quiet")

        async def read() -> None:
            for _ in range(sizes.w7_quiet_gets):
                await self.get(gets, "/api/tasks", headers)
                await asyncio.sleep(0.05)

        async def chat() -> None:
            conversation = None
            for n in range(sizes.w7_quiet_turns):
                conversation = await self.turn(turns, headers, f"quiet {n}", conversation)

        await asyncio.gather(read(), chat())

    async def noisy_user(
        self, stop: asyncio.Event, run: Run, statuses: dict[int, int], sizes: Sizes
    ) -> None:
        """The first user at every cap: listing turns back to back, and streams nobody reads."""
        headers = self.headers("w7-noisy")

        async def lister() -> None:
            conversation = None
            while not stop.is_set():
                body = {"message": "list my tasks", "conversation_id": conversation}
                try:
                    async with self.session().post("/api/chat", json=body, headers=headers) as r:
                        status, raw = r.status, await r.read()
                        retry_after = float(r.headers.get("Retry-After") or 1)
                except (aiohttp.ClientError, TimeoutError) as exc:
                    run.errors += 1
                    run.error_samples.append(type(exc).__name__)
                    continue
                statuses[status] = statuses.get(status, 0) + 1
                if status == 200:
                    conversation = json.loads(raw)["conversation_id"]
                elif status == 429:  # at the rate limit: come back when told to
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), retry_after)
                else:
                    run.errors += 1
                    run.error_samples.append(f"{status} {raw[:120]!r}")

        async def unread_streams() -> None:
            # Raw sockets: the request is sent, the SSE answer is never read.
            port = int(self.base.rsplit(":", 1)[1])
            body = json.dumps({"message": "list my tasks", "stream": True}).encode()
            head = (
                f"POST /api/chat HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Authorization: {headers['Authorization']}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode()
            while not stop.is_set():
                writers = []
                for _ in range(sizes.w7_streams):
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                    writer.write(head + body)
                    writers.append(writer)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 2)
                for writer in writers:
                    writer.close()

        await asyncio.gather(*(lister() for _ in range(sizes.w7_turners)), unread_streams())

    async def history_turns(self, user: str, messages: int, samples: int) -> tuple[float, float]:
        """Median latency and mean server CPU of one turn in a conversation of `messages`.

        Each turn goes to its own freshly seeded conversation, so the history does not grow
        over the samples (a 10-message conversation would be a 50-message one by the 20th turn).
        """
        run = Run()
        headers = self.headers(user)
        conversations = self.seed_conversations(user, messages, samples)
        profiler = self.start_profiler(user)
        cpu0 = cpu_ms(self.pid)
        for n, conversation in enumerate(conversations):
            await self.turn(run, headers, f"{user} more {n}", conversation)
        cpu = (cpu_ms(self.pid) - cpu0) / samples
        stop_profiler(profiler)
        if run.errors:
            raise RuntimeError(f"W4 errors: {run.error_samples[:3]}")
        return statistics.median(run.latencies), cpu


BASELINE = 0
"""The `benches` key of the --baseline server (one worker, another build of the service)."""


def label(workload: str, workers: int) -> str:
    """Results key: `W2` with one worker, `W2/2w` with two, `W2/baseline` on the baseline."""
    if workers == BASELINE:
        return f"{workload}/baseline"
    return workload if workers == 1 else f"{workload}/{workers}w"


TURN_LOADS = {"W2": "plain", "W5": "stream", "W6": "chatkit"}
"""W2 and the same turns streamed (W5) and through ChatKit (W6); they take turns, round by round."""


def turn_figures(load: Load) -> dict[str, Any]:
    run = load.run
    return {
        "turns": load.turns,
        "turns_per_s": round(load.turns / load.wall, 1),
        "p50_ms": round(percentile(run.latencies, 50), 1),
        "p95_ms": round(percentile(run.latencies, 95), 1),
        "cpu_ms_per_turn": round(load.cpu / load.turns, 2),
        **machine_figures(load),
        "events_per_turn": round(run.events / load.turns, 1),
        "errors": run.errors,
        "error_samples": run.error_samples[:3],
    }


def machine_figures(load: Load) -> dict[str, Any]:
    """Where the rest of the machine's CPU went: what caps throughput on two shared cores."""
    figures = {
        f"{name}_cpu_ms_per_turn": round(cpu / load.turns, 2)
        for name, cpu in load.other_cpu.items()
    }
    figures["machine_busy"] = round(load.machine[0] / max(load.machine[1], 1), 2)
    return figures


async def drive(
    benches: dict[int, Bench], sizes: Sizes, only: set[str], limited: Bench | None = None
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    first = benches[min(n for n in benches if n != BASELINE)]
    await first.latency(0)
    for n, bench in benches.items():
        await bench.warm_up(sizes.warmup, max(n, 1))
    # Each workload on the baseline right next to the same on the 1-worker server; then the
    # servers with more workers.
    single = sorted(n for n in benches if n <= 1)
    order = [(w, n) for w in TURN_LOADS for n in single]
    order += [(w, n) for n in benches if n > 1 for w in TURN_LOADS]
    turn_loads = {
        (w, n): Load(TURN_LOADS[w], label(w, n).lower().replace("/", "-"), sizes.w2_users)
        for w, n in order
        if w in only
    }
    per_round = max(1, sizes.w2_turns // sizes.rounds)
    # Every other round in reverse order, so that none of them always follows the same one.
    for round_no in range(sizes.rounds):
        loads = list(turn_loads.items())
        for (_, n), load in loads if round_no % 2 == 0 else reversed(loads):
            await benches[n].load_round(load, per_round)
    for (w, n), load in turn_loads.items():
        figures = turn_figures(load)
        figures["users_with_wrong_tasks"] = await benches[n].check_tasks(
            load.users, load.turns_per_user, load.prefix
        )
        results[label(w, n)] = figures
    for n in benches:
        ratios: dict[str, Any] = {}
        base = results.get(label("W2", n))
        for w in ("W5", "W6"):
            if base and label(w, n) in results:
                ratios[f"{w}_over_W2_cpu"] = round(
                    results[label(w, n)]["cpu_ms_per_turn"] / base["cpu_ms_per_turn"], 2
                )
        if base and n == BASELINE:
            for w in ("W2", "W5", "W6"):
                if (w, 1) in turn_loads and (w, n) in turn_loads:
                    ours, theirs = turn_loads[(w, 1)], turn_loads[(w, n)]
                    ratios[f"{w}_cpu_over_baseline"] = round(ours.cpu / theirs.cpu, 2)
                    # Round by round (the two ran back to back): the median resists a burst of
                    # other work on the machine that hit one of them.
                    pairs = sorted(
                        a / b for a, b in zip(ours.round_cpu, theirs.round_cpu, strict=True)
                    )
                    ratios[f"{w}_cpu_over_baseline_rounds"] = (
                        f"median {statistics.median(pairs):.2f} "
                        f"({pairs[0]:.2f} to {pairs[-1]:.2f}, {len(pairs)} rounds)"
                    )
        elif base and n != 1 and "W2" in results:
            ratios["W2_turns_per_s_over_1_worker"] = round(
                base["turns_per_s"] / results["W2"]["turns_per_s"], 2
            )
            # The most n workers could gain over one busy worker when the bench's own processes
            # (PostgreSQL, stub, load generator) share the machine's cores with them.
            load = turn_loads[("W2", n)]
            bench_cpu = load.cpu + sum(load.other_cpu.values())
            cores = os.cpu_count() or 1
            ratios["W2_speedup_ceiling"] = round(min(n, cores * load.cpu / bench_cpu), 2)
        if ratios:
            results[label("ratios", n)] = ratios
    for n, bench in benches.items():
        if n == BASELINE:
            continue
        for w, kind in (("W3", "plain"), ("W3s", "stream")):
            if w.upper() in only:
                results[label(w, n)] = await slow_model(bench, sizes, kind)
    if "W4" in only:
        results["W4"] = await long_history(first, sizes)
    if limited is not None:
        results["W7"] = await noisy_neighbour(limited, sizes)
        await limited.session().close()
    for n, bench in benches.items():
        results[label("server", n)] = {
            "workers": max(n, 1),
            "rss_mb_end": round(rss_mb(bench.pid), 1),
            "worker_restarts": bench.worker_restarts(),
        }
        await bench.session().close()
    return results


async def slow_model(bench: Bench, sizes: Sizes, kind: str) -> dict[str, Any]:
    """W3 (W3s streamed): 100 users' turns at once against a slow model."""
    await bench.latency(sizes.w3_latency_ms)
    load = Load(kind, f"w3-{kind}-{secrets.token_hex(2)}", sizes.w3_users)
    await bench.load_round(load, sizes.w3_turns)
    await bench.latency(0)
    ideal = sizes.w3_turns * 2 * sizes.w3_latency_ms / 1000
    p95 = percentile(load.run.latencies, 95)
    return {
        "turns": load.turns,
        "wall_s": round(load.wall, 2),
        "ideal_s": ideal,
        "wall_vs_ideal": round(load.wall / ideal, 2),
        "p95_ms": round(p95, 1),
        "p95_vs_ideal_turn": round(p95 / (2 * sizes.w3_latency_ms), 2),
        "errors": load.run.errors,
        "users_with_wrong_tasks": await bench.check_tasks(
            load.users, load.turns_per_user, load.prefix
        ),
        "rss_mb_peak": round(load.rss_peak, 1),
        "cpu_ms_per_turn": round(load.cpu / load.turns, 2),
        **machine_figures(load),
        "error_samples": load.run.error_samples[:3],
    }


async def long_history(bench: Bench, sizes: Sizes) -> dict[str, Any]:
    """W4: turns in conversations of 10, 120 (the window already full) and 400 messages.

    Interleaved in batches, so that drift in machine load hits all three alike.
    """
    lengths = {"short": sizes.w4_short, "full": sizes.w4_full, "long": sizes.w4_long}
    latency: dict[str, list[float]] = {k: [] for k in lengths}
    cpu: dict[str, list[float]] = {k: [] for k in lengths}
    batches = 4
    for _ in range(batches):
        for k, messages in lengths.items():
            lat, c = await bench.history_turns(
                f"w4-{k}", messages, max(1, sizes.w4_samples // batches)
            )
            latency[k].append(lat)
            cpu[k].append(c)
    lat = {k: statistics.mean(v) for k, v in latency.items()}
    c = {k: statistics.mean(v) for k, v in cpu.items()}

    def ratio(a: float, b: float) -> float:
        return round(a / max(b, 0.01), 2)

    return {
        "short_messages": sizes.w4_short,
        "full_messages": sizes.w4_full,
        "long_messages": sizes.w4_long,
        "short_p50_ms": round(lat["short"], 1),
        "full_p50_ms": round(lat["full"], 1),
        "long_p50_ms": round(lat["long"], 1),
        "short_cpu_ms": round(c["short"], 2),
        "full_cpu_ms": round(c["full"], 2),
        "long_cpu_ms": round(c["long"], 2),
        "cpu_ratio": ratio(c["long"], c["short"]),
        "cpu_ratio_long_over_full": ratio(c["long"], c["full"]),
        "cpu_ratio_full_over_short": ratio(c["full"], c["short"]),
        "latency_ratio": ratio(lat["long"], lat["short"]),
    }


async def noisy_neighbour(bench: Bench, sizes: Sizes) -> dict[str, Any]:
    """W7: the quiet user's p95 with the noisy user idle, then with it at every cap.

    Runs on its own server with the default turn rate limit (RATE_LIMIT_REQUESTS), which the
    noisy user reaches within a second: its listers then come back when Retry-After says.
    """
    await bench.latency(sizes.w7_latency_ms)
    warm = Run()  # a fresh server: first requests pay for imports and connections
    await asyncio.gather(*(bench.user(warm, f"w7-warm-{u}", 2) for u in range(5)))
    for _ in range(10):
        await bench.get(warm, "/api/tasks", bench.headers("w7-warm-0"))
    bench.seed_tasks("w7-noisy", sizes.w7_tasks)
    one_more = {"title": "one more"}
    async with bench.session().post(
        "/api/tasks", json=one_more, headers=bench.headers("w7-noisy")
    ) as r:
        at_cap = r.status == 409  # with the default MAX_TASKS_PER_USER (1000)
    idle_gets, idle_turns = Run(), Run()
    await bench.quiet_user(idle_gets, idle_turns, sizes)
    busy_gets, busy_turns, noise = Run(), Run(), Run()
    stop = asyncio.Event()
    peak = [rss_mb(bench.pid)]

    async def sample() -> None:
        while not stop.is_set():
            peak.append(rss_mb(bench.pid))
            await asyncio.sleep(0.05)

    statuses: dict[int, int] = {}
    cpu0, t0 = cpu_ms(bench.pid), time.perf_counter()
    noisy = asyncio.gather(bench.noisy_user(stop, noise, statuses, sizes), sample())
    await bench.quiet_user(busy_gets, busy_turns, sizes)
    stop.set()
    await noisy
    busy_cpu_share = (cpu_ms(bench.pid) - cpu0) / 1000 / (time.perf_counter() - t0)
    await bench.latency(0)

    def ratio(busy: Run, idle: Run) -> float:
        return round(percentile(busy.latencies, 95) / max(percentile(idle.latencies, 95), 0.01), 2)

    return {
        "noisy_tasks": sizes.w7_tasks,
        "noisy_refused_one_more_task": at_cap,
        "noisy_answers": ", ".join(f"{n} x {code}" for code, n in sorted(statuses.items())),
        "noisy_errors": noise.errors,
        "server_cpu_busy": round(busy_cpu_share, 2),
        "quiet_get_p95_idle_ms": round(percentile(idle_gets.latencies, 95), 1),
        "quiet_get_p95_busy_ms": round(percentile(busy_gets.latencies, 95), 1),
        "quiet_get_p95_ratio": ratio(busy_gets, idle_gets),
        "quiet_turn_p95_idle_ms": round(percentile(idle_turns.latencies, 95), 1),
        "quiet_turn_p95_busy_ms": round(percentile(busy_turns.latencies, 95), 1),
        "quiet_turn_p95_ratio": ratio(busy_turns, idle_turns),
        "errors": idle_gets.errors + idle_turns.errors + busy_gets.errors + busy_turns.errors,
        "rss_mb_peak": round(max(peak), 1),
        "error_samples": (idle_gets.error_samples + busy_gets.error_samples)[:3]
        + (idle_turns.error_samples + busy_turns.error_samples + noise.error_samples)[:3],
    }


def stop_profiler(profiler: subprocess.Popen[bytes] | None) -> None:
    if profiler is not None:
        profiler.send_signal(signal.SIGINT)  # py-spy writes its samples and exits
        profiler.wait(30)


def py_spy() -> str | None:
    """py-spy next to this interpreter (the venv's), or on PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def profile_summary(name: str, paths: list[Path], top: int = 12) -> str:
    """py-spy's raw samples of one workload: the top frames by own time, by package, and the
    service's own functions by inclusive time (each as a share of all samples)."""
    own: dict[str, int] = {}
    packages: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in (line for path in paths for line in path.read_text().splitlines()):
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        if stack.startswith("process "):  # --subprocesses: `process PID:"cmdline";` first
            stack = stack.partition('";')[2] or "(no Python frame)"
        frames = stack.split(";")
        if not frames:
            continue
        leaf = frames[-1].rsplit(":", 1)[0] + ")"  # without the line number
        own[leaf] = own.get(leaf, 0) + n
        package = _package(frames[-1])
        packages[package] = packages.get(package, 0) + n
        for frame in {f.rsplit(":", 1)[0] + ")" for f in frames if "backend/" in f}:
            inclusive[frame] = inclusive.get(frame, 0) + n

    def rows(counts: dict[str, int]) -> list[str]:
        ranked = sorted(counts.items(), key=lambda kv: -kv[1])[:top]
        return [f"  {100 * n / max(total, 1):5.1f} %  {name}" for name, n in ranked]

    return "\n".join(
        [
            *(f"{name}: {total} samples", " own time, by package:", *rows(packages)),
            *(" own time, by function:", *rows(own)),
            *(" inclusive, the service's functions:", *rows(inclusive)),
        ]
    )


def _package(frame: str) -> str:
    """`name (pkg/mod.py:12)` (py-spy's short path) -> `pkg`."""
    path = frame.rpartition("(")[2]
    return path.split("/", 1)[0].split(":", 1)[0].removesuffix(".py")


TARGETS = {
    ("W2", "cpu_ms_per_turn"): "≤ 8",
    ("W3", "wall_vs_ideal"): "≤ 1.5",
    ("W3s", "wall_vs_ideal"): "≤ 1.5",
    ("W3/2w", "wall_vs_ideal"): "≤ 1.25",
    ("W3s/2w", "wall_vs_ideal"): "≤ 1.25",
    ("W3", "p95_vs_ideal_turn"): "≤ 2",
    ("W3", "rss_mb_peak"): "≤ 300",
    ("W4", "cpu_ratio"): "≤ 1.2",
    ("W4", "cpu_ratio_long_over_full"): "≤ 1.1",
    ("W4", "cpu_ratio_full_over_short"): "≤ 1.15",
    ("W7", "quiet_get_p95_ratio"): "≤ 3",
    ("W7", "quiet_turn_p95_ratio"): "≤ 3",
    ("W7", "rss_mb_peak"): "≤ 400",
}
RATIO_TARGETS = {
    "W5_over_W2_cpu": "≤ 1.15",
    "W6_over_W2_cpu": "≤ 1.3",
    "W2_turns_per_s_over_1_worker": "≥ 1.7",
    "W2_cpu_over_baseline": "≤ 1.1",
    "W5_cpu_over_baseline": "≤ 1.1",
    "W6_cpu_over_baseline": "≤ 1.1",
}


def table(results: dict[str, Any]) -> str:
    lines = ["| workload | metric | value | target |", "|---|---|---|---|"]
    for workload, figures in results.items():
        if not isinstance(figures, dict) or workload == "machine":
            continue
        for metric, value in figures.items():
            if metric == "error_samples":
                continue
            target = TARGETS.get((workload, metric)) or RATIO_TARGETS.get(metric, "")
            if workload.endswith("/baseline") and "baseline" not in metric:
                target = ""  # the baseline's own figures: reference, not held to targets
            if metric in ("errors", "users_with_wrong_tasks", "worker_restarts"):
                target = "0"
            lines.append(f"| {workload} | {metric} | {value} | {target} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--smoke", action="store_true", help="a few turns only (used by the tests)")
    parser.add_argument("--only", default="W2,W3,W3s,W4,W5,W6,W7", help="comma-separated workloads")
    parser.add_argument(
        "--workers",
        default="1,2",
        help="uvicorn worker counts, one server each (W2, W3, W3s, W5, W6 run on every one)",
    )
    parser.add_argument(
        "--baseline",
        metavar="REV",
        help="also run W2, W5 and W6 on this git revision of the service (one worker, its own "
        "database, this venv), interleaved with the 1-worker server: `W2_cpu_over_baseline`",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        help="rounds of W2/W5/W6 (2 turns per user each; default 5): more for steadier ratios",
    )
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help="sample the server with py-spy during each workload but W7 (raw stacks in DIR, "
        "top frames printed; one round each, figures perturbed)",
    )
    args = parser.parse_args()
    sizes = SMOKE if args.smoke else Sizes()
    if args.rounds:
        sizes = dataclasses.replace(sizes, rounds=args.rounds, w2_turns=2 * args.rounds)
    profile_dir = Path(args.profile).resolve() if args.profile else None
    if profile_dir is not None:
        if py_spy() is None:
            sys.exit("--profile needs py-spy (uv pip install --python .venv/bin/python py-spy)")
        profile_dir.mkdir(parents=True, exist_ok=True)
        # One contiguous stretch per workload, so that each has a profile of its own.
        sizes = dataclasses.replace(sizes, rounds=1)
    only = {w.strip().upper() for w in args.only.split(",")}
    counts = sorted({int(n) for n in args.workers.split(",")})
    with tempfile.TemporaryDirectory(prefix="ta-bench-") as tmp, ExitStack() as stack:
        tmp_path = Path(tmp)
        db_url = stack.enter_context(database(tmp_path))
        stub_port, server_port = free_port(), free_port()
        env = isolated_env()
        stub = start([sys.executable, "-m", "bench.stub_llm", "--port", str(stub_port)], env, stack)
        wait_http(f"http://127.0.0.1:{stub_port}/v1/models", stub)
        env.update(
            DATABASE_URL=db_url,
            DATA_DIR=str(tmp_path / "data"),
            LLM_BASE_URL=f"http://127.0.0.1:{stub_port}/v1",
            LLM_API_KEY="bench",
            LLM_MODEL="stub-model",
            # Rate limiting stays on (its cost is part of a turn) with a limit the load never reaches.
            RATE_LIMIT_REQUESTS="1000000",
            LOG_LEVEL="WARNING",
        )

        # The development key, before several workers race to create it.
        load_or_create_dev_key(tmp_path / "data")

        def bench_on(
            server_env: dict[str, str], port: int, workers: int = 1, source: Path = ROOT
        ) -> Bench:
            pid = serve(server_env, port, stack, workers, source).pid
            stub_url = f"http://127.0.0.1:{stub_port}/v1"
            url = server_env["DATABASE_URL"]
            return Bench(f"http://127.0.0.1:{port}", stub_url, pid, tmp_path / "data", url)

        benches = {
            n: bench_on(env, server_port if n == counts[0] else free_port(), n) for n in counts
        }
        if args.baseline:
            source = baseline_tree(args.baseline, tmp_path / "baseline")
            base_db = stack.enter_context(database(tmp_path, source))
            benches[BASELINE] = bench_on({**env, "DATABASE_URL": base_db}, free_port(), 1, source)
        others = {"stub": functools.partial(cpu_ms, stub.pid)}
        postmaster = tmp_path / "pg" / "postmaster.pid"
        if postmaster.exists():  # the embedded server (BENCH_DATABASE_URL's is not ours to read)
            pg = int(postmaster.read_text().split()[0])
            others["postgres"] = functools.partial(cpu_ms, pg)
        for b in benches.values():
            b.others.update(others)
            b.profile_dir = profile_dir
        limited: Bench | None = None
        if "W7" in only:
            # W7's own server, with the product's default turn rate limit: "at every cap".
            w7_env = {k: v for k, v in env.items() if k != "RATE_LIMIT_REQUESTS"}
            limited = bench_on(w7_env, free_port())
        results = asyncio.run(drive(benches, sizes, only, limited))
    results["machine"] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "database": "BENCH_DATABASE_URL"
        if os.environ.get("BENCH_DATABASE_URL")
        else "embedded PostgreSQL 16",
        "mode": "smoke" if args.smoke else "full",
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    print(table(results))
    profiles: dict[str, list[Path]] = {}
    for path in sorted(profile_dir.glob("*.txt")) if profile_dir else []:
        profiles.setdefault(path.name.split(".", 1)[0], []).append(path)
    for name, paths in profiles.items():
        print(profile_summary(name, paths))
    print(json.dumps(results["machine"]))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = (
        out / f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}{'-smoke' if args.smoke else ''}.json"
    )
    path.write_text(json.dumps(results, indent=2))
    print(f"results written to {path}")
    failed = any(
        isinstance(figures, dict)
        and any(figures.get(k) for k in ("errors", "users_with_wrong_tasks", "worker_restarts"))
        for figures in results.values()
    )
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
