"""The service's processes as /proc sees them: the tree under uvicorn, its CPU time and
memory, the whole machine's busy time, and py-spy attached to it (`--profile`)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


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


def own_cpu_ms(pid: int) -> float:
    """CPU time of the process `pid` alone (not its children)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:  # exited meanwhile
        return 0.0
    return (int(fields[11]) + int(fields[12])) * 1000 / TICKS  # utime + stime


def cpu_ms(pid: int) -> float:
    """CPU time of the service: `pid` and every process under it."""
    return sum(own_cpu_ms(p) for p in process_tree(pid))


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


def py_spy() -> str | None:
    """py-spy next to this interpreter (the venv's), or on PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def start_profiler(pid: int, profile_dir: Path | None, name: str) -> subprocess.Popen[bytes] | None:
    """With --profile: py-spy sampling the server (every worker) into `<dir>/<name>.<n>.txt`."""
    if profile_dir is None:
        return None
    out = profile_dir / f"{name}.{len(list(profile_dir.glob(name + '.*.txt')))}.txt"
    proc = subprocess.Popen(
        [
            *(str(py_spy()), "record", "--pid", str(pid), "--subprocesses", "--nonblocking"),
            *("--format", "raw", "--rate", "200", "--output", str(out)),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.5)  # attached before the first turn
    return proc


def stop_profiler(profiler: subprocess.Popen[bytes] | None) -> None:
    if profiler is not None:
        profiler.send_signal(signal.SIGINT)  # py-spy writes its samples and exits
        profiler.wait(30)
