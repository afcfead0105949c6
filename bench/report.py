"""What a run reports: the table of figures against their targets, py-spy's summary of each
workload (--profile), the machine it ran on, and the results file."""

from __future__ import annotations

import json
import os
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

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
MUST_BE_ZERO = ("errors", "users_with_wrong_tasks", "worker_restarts")


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
            if metric in MUST_BE_ZERO:
                target = "0"
            lines.append(f"| {workload} | {metric} | {value} | {target} |")
    return "\n".join(lines)


def failed(results: dict[str, Any]) -> bool:
    """Any error, wrong task list or worker restart in any workload."""
    return any(
        isinstance(figures, dict) and any(figures.get(k) for k in MUST_BE_ZERO)
        for figures in results.values()
    )


def machine(smoke: bool) -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "database": "BENCH_DATABASE_URL"
        if os.environ.get("BENCH_DATABASE_URL")
        else "embedded PostgreSQL 16",
        "mode": "smoke" if smoke else "full",
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def profile_summaries(profile_dir: Path | None) -> list[str]:
    """A summary of each workload's raw py-spy samples in `profile_dir` (`<name>.<n>.txt`)."""
    profiles: dict[str, list[Path]] = {}
    for path in sorted(profile_dir.glob("*.txt")) if profile_dir else []:
        profiles.setdefault(path.name.split(".", 1)[0], []).append(path)
    return [profile_summary(name, paths) for name, paths in profiles.items()]


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


def write_results(results: dict[str, Any], out: Path, smoke: bool) -> Path:
    """`results` as `<out>/<time>[-smoke].json`."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}{'-smoke' if smoke else ''}.json"
    path.write_text(json.dumps(results, indent=2))
    return path
