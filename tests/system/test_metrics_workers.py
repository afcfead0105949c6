"""Metrics across processes: with several uvicorn workers a scrape of any one reports the sum."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.prometheus import parse, value

_WORKER = """
import sys
from backend.observability import metrics
from backend.web import metrics as endpoint
for _ in range(int(sys.argv[1])):
    metrics.request_done("GET", "/health", 200, 0.001)
metrics.turn_started()
if sys.argv[2] == "exit":
    endpoint.process_exiting()
"""
_SCRAPE = """
import sys
from prometheus_client import generate_latest
from backend.web import metrics as endpoint
sys.stdout.write(generate_latest(endpoint._registry()).decode())
"""


def test_several_processes_report_one_sum(tmp_path: Path) -> None:
    """With PROMETHEUS_MULTIPROC_DIR (several uvicorn workers), a scrape of any process reports
    the sum over all of them, and a worker that shut down leaves the live gauges."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}

    def run(code: str, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    run(_WORKER, "3", "alive")
    run(_WORKER, "4", "exit")
    samples = parse(run(_SCRAPE))
    health = {"method": "GET", "route": "/health", "status": "200"}
    assert value(samples, "task_assistant_http_requests_total", **health) == 7
    assert (
        value(
            samples,
            "task_assistant_http_request_duration_seconds_count",
            method="GET",
            route="/health",
        )
        == 7
    )
    assert value(samples, "task_assistant_chat_turns_in_progress") == 1
