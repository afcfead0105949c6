"""`make bench`: the service under load on this machine, against a local stub model.

Starts a PostgreSQL (embedded, or a fresh database on BENCH_DATABASE_URL's server), the
OpenAI-compatible stub (`bench.stub_llm`, its own process) and the service with ONE uvicorn
worker (its own process, whose CPU time and memory are read from /proc), then drives it over
real HTTP with real EdDSA tokens. See bench/README.md for the workloads and targets.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
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
from backend.cli import migrate
from backend.config import normalize_database_url
from bench.env import isolated_env

ROOT = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Sizes:
    w2_users: int = 20
    w2_turns: int = 10
    w3_users: int = 100
    w3_turns: int = 2
    w3_latency_ms: float = 500
    w4_long: int = 400
    w4_short: int = 10
    w4_samples: int = 40
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
    w3_users=4,
    w3_turns=1,
    w3_latency_ms=50,
    w4_long=40,
    w4_short=10,
    w4_samples=3,
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


def cpu_ms(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / TICKS  # utime + stime


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def percentile(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


@contextmanager
def database(tmp: Path) -> Any:
    """A fresh database: on BENCH_DATABASE_URL's server, or on an embedded PostgreSQL."""
    server = os.environ.get("BENCH_DATABASE_URL")
    if server:
        server = normalize_database_url(server).replace("postgresql+psycopg://", "postgresql://", 1)
    else:
        from backend.db import embedded_database_url

        server = embedded_database_url(tmp).replace("postgresql+psycopg://", "postgresql://", 1)
    name = "bench_" + secrets.token_hex(4)
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base, _, query = server.partition("?")
    url = base.rsplit("/", 1)[0] + "/" + name + (("?" + query) if query else "")
    try:
        migrate(normalize_database_url(url))
        yield url
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if not os.environ.get("BENCH_DATABASE_URL"):
            # Stop the embedded server now: its atexit hook runs after `tmp` is deleted, when
            # `pg_ctl stop` can no longer find the data directory and postgres lingers.
            from backend.embedded import stop_embedded

            stop_embedded(tmp)


def start(cmd: list[str], env: dict[str, str], stack: ExitStack) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT)

    def stop() -> None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()

    stack.callback(stop)
    return proc


def serve(env: dict[str, str], port: int, stack: ExitStack) -> subprocess.Popen[bytes]:
    """The service with one uvicorn worker on `port`, up and answering /health."""
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
            "1",
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        env,
        stack,
    )
    wait_http(f"http://127.0.0.1:{port}/health", server)
    return server


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

    def headers(self, user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {mint_token(self.key, user)}"}

    async def latency(self, ms: float) -> None:
        async with self.session().put(f"{self.stub}/_control", json={"latency_ms": ms}) as r:
            r.raise_for_status()

    def session(self) -> aiohttp.ClientSession:
        if self.http is None:
            self.http = aiohttp.ClientSession(
                base_url=self.base,
                connector=aiohttp.TCPConnector(limit=500),
                timeout=aiohttp.ClientTimeout(total=60),
            )
        return self.http

    async def turn(
        self, run: Run, headers: dict[str, str], message: str, conversation: str | None
    ) -> str | None:
        started = time.perf_counter()
        body = {"message": message, "conversation_id": conversation}
        try:
            async with self.session().post("/api/chat", json=body, headers=headers) as r:
                status, raw = r.status, await r.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            run.errors += 1
            run.error_samples.append(type(exc).__name__)
            return conversation
        run.latencies.append((time.perf_counter() - started) * 1000)
        if status != 200:
            run.errors += 1
            run.error_samples.append(f"{status} {raw[:120]!r}")
            return conversation
        return str(json.loads(raw)["conversation_id"])

    async def user(self, run: Run, name: str, turns: int) -> None:
        headers = self.headers(name)
        conversation = None
        for n in range(turns):
            conversation = await self.turn(run, headers, f"{name} task {n}", conversation)

    async def measure(self, users: int, turns: int, prefix: str) -> tuple[Run, float, float, float]:
        run = Run()
        peak = [rss_mb(self.pid)]

        async def sample() -> None:
            while True:
                peak.append(rss_mb(self.pid))
                await asyncio.sleep(0.05)

        sampler = asyncio.create_task(sample())
        cpu0, t0 = cpu_ms(self.pid), time.perf_counter()
        await asyncio.gather(*(self.user(run, f"{prefix}-{u}", turns) for u in range(users)))
        wall, cpu = time.perf_counter() - t0, cpu_ms(self.pid) - cpu0
        sampler.cancel()
        return run, wall, cpu, max(peak)

    async def check_tasks(self, users: int, turns: int, prefix: str) -> int:
        wrong = 0
        for u in range(users):
            name = f"{prefix}-{u}"
            async with self.session().get("/api/tasks", headers=self.headers(name)) as r:
                tasks = (await r.json())["tasks"]
            if sorted(t["title"] for t in tasks) != sorted(
                f"{name} task {n}" for n in range(turns)
            ):
                wrong += 1
        return wrong

    def seed_conversation(self, user: str, messages: int) -> str:
        """A conversation with `messages` stored messages shaped like real tool-calling turns."""
        cid = uuid.uuid4()
        with psycopg.connect(self.db_url) as conn:
            conn.execute(
                "INSERT INTO conversations (id, user_id, title) VALUES (%s, %s, 'long')",
                (cid, user),
            )
            rows = []
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
                rows.append((cid, user, "user", question, None, None, count_tokens(question)))
                rows.append(
                    (
                        cid,
                        user,
                        "assistant",
                        "Done: added it.",
                        json.dumps(calls),
                        json.dumps(items),
                        count_tokens("Done: added it.", items),
                    )
                )
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO messages (conversation_id, user_id, role, content, tool_calls, items, token_count) "
                    "VALUES (%s, %s, %s, %s, %s::jsonb, %s::jsonb, %s)",
                    rows,
                )
        return str(cid)

    def seed_tasks(self, user: str, count: int) -> None:
        """`count` tasks of maximum size (200-character title, 2,000-character description)."""
        rows = [(user, f"{n:05d} " + "t" * 194, "d" * 2000) for n in range(count)]
        with psycopg.connect(self.db_url) as conn, conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO tasks (user_id, title, description) VALUES (%s, %s, %s)", rows
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

    async def history_turns(
        self, user: str, conversation: str, samples: int
    ) -> tuple[float, float]:
        run = Run()
        headers = self.headers(user)
        cpu0 = cpu_ms(self.pid)
        for n in range(samples):
            await self.turn(run, headers, f"{user} more {n}", conversation)
        cpu = (cpu_ms(self.pid) - cpu0) / samples
        if run.errors:
            raise RuntimeError(f"W4 errors: {run.error_samples[:3]}")
        return statistics.median(run.latencies), cpu


async def drive(
    bench: Bench, sizes: Sizes, only: set[str], limited: Bench | None = None
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    await bench.latency(0)
    warm = Run()
    await asyncio.gather(
        *(bench.user(warm, f"warm-{u}", 2) for u in range(max(1, sizes.warmup // 2)))
    )
    if "W2" in only:
        run, wall, cpu, _ = await bench.measure(sizes.w2_users, sizes.w2_turns, "w2")
        turns = sizes.w2_users * sizes.w2_turns
        results["W2"] = {
            "turns": turns,
            "turns_per_s": round(turns / wall, 1),
            "p50_ms": round(percentile(run.latencies, 50), 1),
            "p95_ms": round(percentile(run.latencies, 95), 1),
            "cpu_ms_per_turn": round(cpu / turns, 2),
            "errors": run.errors,
            "users_with_wrong_tasks": await bench.check_tasks(sizes.w2_users, sizes.w2_turns, "w2"),
            "error_samples": run.error_samples[:3],
        }
    if "W3" in only:
        await bench.latency(sizes.w3_latency_ms)
        run, wall, cpu, peak = await bench.measure(sizes.w3_users, sizes.w3_turns, "w3")
        ideal = sizes.w3_turns * 2 * sizes.w3_latency_ms / 1000
        results["W3"] = {
            "turns": sizes.w3_users * sizes.w3_turns,
            "wall_s": round(wall, 2),
            "ideal_s": ideal,
            "wall_vs_ideal": round(wall / ideal, 2),
            "p95_ms": round(percentile(run.latencies, 95), 1),
            "p95_vs_ideal_turn": round(
                percentile(run.latencies, 95) / (2 * sizes.w3_latency_ms), 2
            ),
            "errors": run.errors,
            "rss_mb_peak": round(peak, 1),
            "cpu_ms_per_turn": round(cpu / (sizes.w3_users * sizes.w3_turns), 2),
            "error_samples": run.error_samples[:3],
        }
        await bench.latency(0)
    if "W4" in only:
        short = bench.seed_conversation("w4-short", sizes.w4_short)
        long = bench.seed_conversation("w4-long", sizes.w4_long)
        # interleave so that drift in machine load hits both alike
        s_lat, s_cpu, l_lat, l_cpu = [], [], [], []
        for _ in range(2):
            a = await bench.history_turns("w4-short", short, sizes.w4_samples // 2 or 1)
            b = await bench.history_turns("w4-long", long, sizes.w4_samples // 2 or 1)
            s_lat.append(a[0]), s_cpu.append(a[1]), l_lat.append(b[0]), l_cpu.append(b[1])
        results["W4"] = {
            "short_messages": sizes.w4_short,
            "long_messages": sizes.w4_long,
            "short_p50_ms": round(statistics.mean(s_lat), 1),
            "long_p50_ms": round(statistics.mean(l_lat), 1),
            "short_cpu_ms": round(statistics.mean(s_cpu), 2),
            "long_cpu_ms": round(statistics.mean(l_cpu), 2),
            "cpu_ratio": round(statistics.mean(l_cpu) / max(statistics.mean(s_cpu), 0.01), 2),
            "latency_ratio": round(statistics.mean(l_lat) / max(statistics.mean(s_lat), 0.01), 2),
        }
    if limited is not None:
        results["W7"] = await noisy_neighbour(limited, sizes)
        await limited.session().close()
    results["server_rss_mb_end"] = round(rss_mb(bench.pid), 1)
    await bench.session().close()
    return results


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


def table(results: dict[str, Any]) -> str:
    lines = ["| workload | metric | value | target |", "|---|---|---|---|"]
    targets = {
        ("W2", "cpu_ms_per_turn"): "≤ 8",
        ("W2", "errors"): "0",
        ("W2", "users_with_wrong_tasks"): "0",
        ("W3", "wall_vs_ideal"): "≤ 1.25",
        ("W3", "p95_vs_ideal_turn"): "≤ 2",
        ("W3", "errors"): "0",
        ("W3", "rss_mb_peak"): "≤ 300",
        ("W4", "cpu_ratio"): "≤ 1.2",
        ("W7", "quiet_get_p95_ratio"): "≤ 3",
        ("W7", "quiet_turn_p95_ratio"): "≤ 3",
        ("W7", "errors"): "0",
        ("W7", "rss_mb_peak"): "≤ 400",
    }
    for workload in ("W2", "W3", "W4", "W7"):
        for metric, value in results.get(workload, {}).items():
            if metric == "error_samples":
                continue
            lines.append(
                f"| {workload} | {metric} | {value} | {targets.get((workload, metric), '')} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--smoke", action="store_true", help="a few turns only (used by the tests)")
    parser.add_argument("--only", default="W2,W3,W4,W7", help="comma-separated workloads")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args()
    sizes = SMOKE if args.smoke else Sizes()
    only = {w.strip().upper() for w in args.only.split(",")}
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

        def bench_on(server_env: dict[str, str], port: int) -> Bench:
            pid = serve(server_env, port, stack).pid
            stub_url = f"http://127.0.0.1:{stub_port}/v1"
            return Bench(f"http://127.0.0.1:{port}", stub_url, pid, tmp_path / "data", db_url)

        bench = bench_on(env, server_port)
        limited: Bench | None = None
        if "W7" in only:
            # W7's own server, with the product's default turn rate limit: "at every cap".
            w7_env = {k: v for k, v in env.items() if k != "RATE_LIMIT_REQUESTS"}
            limited = bench_on(w7_env, free_port())
        results = asyncio.run(drive(bench, sizes, only, limited))
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
    print(json.dumps(results["machine"]))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = (
        out / f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}{'-smoke' if args.smoke else ''}.json"
    )
    path.write_text(json.dumps(results, indent=2))
    print(f"results written to {path}")
    failed = any(results.get(w, {}).get("errors") for w in ("W2", "W3", "W7")) or results.get(
        "W2", {}
    ).get("users_with_wrong_tasks")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
