"""The benchmark's smoke mode runs end to end, so `make bench` cannot rot (no timing assertions)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support import ROOT


def run_bench(out: Path, *args: str) -> tuple[dict[str, Any], str]:
    """`python -m bench --smoke ARGS`: its results file and what it printed. On the test
    database's server when there is one (no embedded PostgreSQL to start)."""
    env = dict(os.environ)
    if os.environ.get("TEST_DATABASE_URL"):
        env["BENCH_DATABASE_URL"] = os.environ["TEST_DATABASE_URL"]
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", *args, "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (result_file,) = out.glob("*.json")
    return json.loads(result_file.read_text()), proc.stdout


def test_bench_smoke_with_a_baseline_build(tmp_path: Path) -> None:
    """One tiny run of every workload on one server, with --baseline (another git revision,
    here HEAD itself) next to it: seconds, not a full bench twice."""
    if subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True
    ).returncode:
        pytest.skip("not a git checkout")
    results, printed = run_bench(tmp_path, "--workers", "1", "--baseline", "HEAD")
    assert results["W2"]["errors"] == 0 and results["W2"]["users_with_wrong_tasks"] == 0
    assert results["W2"]["turns"] == 6 and results["W3"]["errors"] == 0
    assert results["W4"]["long_messages"] > results["W4"]["short_messages"]
    assert "| W2 | cpu_ms_per_turn |" in printed
    assert results["W2/baseline"]["errors"] == 0
    assert results["W2/baseline"]["users_with_wrong_tasks"] == 0
    assert results["W2/baseline"]["turns"] == results["W2"]["turns"] == 6
    assert results["ratios/baseline"]["W2_cpu_over_baseline"] > 0
    assert "| ratios/baseline | W2_cpu_over_baseline_rounds | median" in printed
