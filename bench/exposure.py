"""W8 and W9, what strangers can cost the server (issue 21): clients that never read a large
page, and an anonymous flood of `GET /metrics`. Both run on a server of their own started as
`task-assistant serve --workers 1` starts it (the other workloads' servers are plain uvicorn,
without `httpserver.LimitedHttpProtocol`'s deadlines), with the service's defaults
(RESPONSE_WRITE_TIMEOUT_SECONDS, METRICS_TOKEN unset, METRICS_PUBLIC off).

W8: a conversation of 40 messages of 50,000 control characters (6 bytes each in JSON: a page
of MAX_PAGE_BYTES counted in stored bytes would be ~6 MB as sent); 40 raw sockets with a 4 kB
receive buffer each ask for its first page and never read. The server's RSS is sampled every
100 ms for a minute from the first request: its peak over the RSS before, how many sockets the
write deadline reset (and when the last), what is left at the end of the minute (memory, and
sockets the server process still holds). Then the same with 4 pipelined requests for the page
on each socket (`pipelined_`): ~5 MB per client, the size the issue's pages had as sent.

W9: a quiet user reads `GET /api/tasks` every 50 ms, first alone, then while 10 clients in
another process (so that their CPU does not delay the quiet user's own event loop) send
`GET /metrics` without a token back to back. The ratio of the two p95 latencies.

`python -m bench.exposure flood BASE_URL CLIENTS` is W9's flood (it stops on SIGTERM and
prints its answers' counts as JSON).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import aiohttp
import psycopg

from bench import report
from bench.client import Run, percentile
from bench.measure import Bench
from bench.procs import cpu_ms, rss_mb, worker_pids
from bench.servers import start, wait_http
from bench.sizes import Sizes

W8_CLIENTS, W8_MESSAGES, W8_CHARS, W8_WATCH_S = 40, 40, 50_000, 60.0
W8_PIPELINED = 4
W9_FLOODERS = 10
TCP_CLOSE = 7

# The targets, printed next to the figures (report.py's table reads this dict).
report.TARGETS.update(
    {
        ("W8", "connections_held_after_a_minute"): "0",
        ("W8", "pipelined_connections_held_after_a_minute"): "0",
        ("W8", "rss_mb_peak_over_before"): "≤ 60",
        ("W8", "rss_mb_left_after_a_minute"): "≤ 25",
        ("W8", "pipelined_rss_mb_peak_over_before"): "≤ 60",
        ("W8", "pipelined_rss_mb_left_after_a_minute"): "≤ 25",
        ("W9", "quiet_get_p95_ratio"): "≤ 3",
    }
)


def serve_product(env: dict[str, str], port: int, stack: ExitStack) -> int:
    """`task-assistant serve` on `port` (one process), up and answering /health: its pid."""
    cli = Path(sys.executable).parent / "task-assistant"
    server = start([str(cli), "serve", "--port", str(port), "--workers", "1"], env, stack)
    wait_http(f"http://127.0.0.1:{port}/health", server)
    return server.pid


async def run(bench: Bench, sizes: Sizes, only: set[str]) -> dict[str, Any]:
    results: dict[str, Any] = {}
    if "W8" in only:
        results["W8"] = await slow_readers(bench, sizes)
    if "W9" in only:
        results["W9"] = await metrics_flood(bench, sizes)
    results["server/serve"] = {"rss_mb_end": round(rss_mb(bench.pid), 1)}
    await bench.close()
    return results


def seed_page(db_url: str, user: str, messages: int, chars: int) -> str:
    """A conversation of `messages` messages of `chars` control characters each."""
    cid = uuid.uuid4()
    rows = [
        (cid, user, ("user", "assistant")[n % 2], f"{n:03d}" + "\x01" * chars)
        for n in range(messages)
    ]
    with psycopg.connect(db_url) as conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO conversations (id, user_id, title) VALUES (%s, %s, 'w8')", (cid, user)
        )
        cur.executemany(
            "INSERT INTO messages (conversation_id, user_id, role, content, token_count) "
            "VALUES (%s, %s, %s, %s, 1)",
            rows,
        )
    return str(cid)


async def never_reading(port: int, request: bytes) -> socket.socket:
    """A client socket that sends `request` and will read nothing (a 4 kB receive window)."""
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setblocking(False)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await loop.sock_connect(sock, ("127.0.0.1", port))
    await loop.sock_sendall(sock, request)
    return sock


def reset_by_server(sock: socket.socket) -> bool:
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0] == TCP_CLOSE


async def slow_readers(bench: Bench, sizes: Sizes) -> dict[str, Any]:
    """W8: 40 clients that ask for a large page and never read it; the server's memory."""
    clients = min(W8_CLIENTS, sizes.w3_users)  # --smoke: 4
    user = "w8-reader"
    cid = seed_page(bench.db_url, user, W8_MESSAGES, W8_CHARS)
    headers = bench.headers(user)
    path = f"/api/conversations/{cid}?limit=200"
    run = Run()
    answer = await bench.request(run, "GET", path, headers)  # a reader: the page as sent
    if answer is None or answer[0] != 200:
        raise RuntimeError(f"W8 page read failed: {answer!r:.200} {run.error_samples}")
    request = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: {headers['Authorization']}\r\n\r\n"
    ).encode()
    figures: dict[str, Any] = {
        "clients": clients,
        "page_bytes_as_sent": len(answer[1]),
        "page_messages": len(json.loads(answer[1])["messages"]),
    }
    # One page each (the attack), then W8_PIPELINED pages each on one connection.
    figures.update(await stalled(bench, request, clients, ""))
    figures.update(await stalled(bench, request * W8_PIPELINED, clients, "pipelined_"))
    figures["errors"] = run.errors
    return figures


async def stalled(bench: Bench, request: bytes, clients: int, prefix: str) -> dict[str, Any]:
    """`clients` sockets send `request` and never read; the server's memory and sockets."""
    await asyncio.sleep(1)  # whatever the last requests allocated is back
    port = int(bench.base.rsplit(":", 1)[1])
    before = rss_mb(bench.pid)
    t0 = time.monotonic()
    socks = [await never_reading(port, request) for _ in range(clients)]
    peak, all_reset_at = before, None
    cpu0 = cpu_ms(bench.pid)
    try:
        while (elapsed := time.monotonic() - t0) < W8_WATCH_S:
            peak = max(peak, rss_mb(bench.pid))
            if all_reset_at is None and all(reset_by_server(s) for s in socks):
                all_reset_at = elapsed
            await asyncio.sleep(0.1)
        left, held = rss_mb(bench.pid), held_connections(bench.pid, port)
        reset = sum(reset_by_server(s) for s in socks)
    finally:
        for sock in socks:
            sock.close()
    return {
        f"{prefix}rss_mb_before": round(before, 1),
        f"{prefix}rss_mb_peak_over_before": round(peak - before, 1),
        f"{prefix}reset_by_write_deadline": reset,
        f"{prefix}all_reset_after_s": round(all_reset_at, 1) if all_reset_at else None,
        f"{prefix}rss_mb_left_after_a_minute": round(left - before, 1),
        f"{prefix}connections_held_after_a_minute": held,
        f"{prefix}server_cpu_ms": round(cpu_ms(bench.pid) - cpu0, 1),
    }


def held_connections(pid: int, port: int) -> int:
    """Client connections to `port` the server's processes still hold (not the listener)."""
    held = 0
    for p in worker_pids(pid):
        sockets = set()
        for fd in os.listdir(f"/proc/{p}/fd"):
            with contextlib.suppress(OSError):
                sockets.add(os.readlink(f"/proc/{p}/fd/{fd}").removeprefix("socket:[")[:-1])
        for line in Path(f"/proc/{p}/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()  # sl local remote state ... inode (field 9)
            listening = fields[3] == "0A"
            if int(fields[1].split(":")[1], 16) == port and not listening and fields[9] in sockets:
                held += 1
    return held


async def quiet_reads(bench: Bench, run: Run, reads: int) -> None:
    headers = bench.headers("w9-quiet")
    for _ in range(reads):
        await bench.get(run, "/api/tasks", headers)
        await asyncio.sleep(0.05)


async def metrics_flood(bench: Bench, sizes: Sizes) -> dict[str, Any]:
    """W9: a quiet user's reads alone, then next to an anonymous flood of /metrics."""
    reads = sizes.w7_quiet_gets  # W7's quiet user's: 100 (--smoke: 5)
    warm, idle, busy = Run(), Run(), Run()
    await quiet_reads(bench, warm, 10)
    await quiet_reads(bench, idle, reads)
    flood = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.exposure",
        "flood",
        bench.base,
        str(W9_FLOODERS),
        stdout=asyncio.subprocess.PIPE,
    )
    assert flood.stdout is not None
    await flood.stdout.readline()  # the flood is on
    cpu0, t0 = cpu_ms(bench.pid), time.perf_counter()
    await quiet_reads(bench, busy, reads)
    cpu_share = (cpu_ms(bench.pid) - cpu0) / 1000 / (time.perf_counter() - t0)
    flood.send_signal(signal.SIGTERM)
    counts = json.loads(await flood.stdout.read() or b"{}")
    await flood.wait()
    seconds = counts.pop("seconds", 1)
    idle_p95, busy_p95 = percentile(idle.latencies, 95), percentile(busy.latencies, 95)
    return {
        "flooders": W9_FLOODERS,
        "flood_answers": ", ".join(f"{n} x {status}" for status, n in sorted(counts.items())),
        "flood_requests_per_s": round(sum(counts.values()) / max(seconds, 0.001)),
        "server_cpu_busy": round(cpu_share, 2),
        "quiet_get_p95_idle_ms": round(idle_p95, 1),
        "quiet_get_p95_busy_ms": round(busy_p95, 1),
        "quiet_get_p95_ratio": round(busy_p95 / max(idle_p95, 0.01), 2),
        "errors": idle.errors + busy.errors,
        "error_samples": (idle.error_samples + busy.error_samples)[:3],
    }


async def flood(base: str, clients: int) -> None:
    """Anonymous `GET /metrics` from `clients` connections, back to back, until SIGTERM."""
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    counts: dict[str, int] = {}
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(base_url=base, connector=connector) as session:

        async def one() -> None:
            while not stop.is_set():
                try:
                    async with session.get("/metrics") as r:
                        await r.read()
                        key = str(r.status)
                except (aiohttp.ClientError, TimeoutError) as exc:
                    key = type(exc).__name__
                counts[key] = counts.get(key, 0) + 1

        started = time.perf_counter()
        tasks = [asyncio.create_task(one()) for _ in range(clients)]
        print("flooding", flush=True)
        await stop.wait()
        seconds = time.perf_counter() - started
        for task in tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks)
    print(json.dumps({**counts, "seconds": seconds}), flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["flood"]:
        asyncio.run(flood(sys.argv[2], int(sys.argv[3])))
