"""Helpers for tests that run the embedded PostgreSQL: a safe DATA_DIR, and what `ps` shows."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def postgres_data_dir() -> Iterator[Path]:
    """A DATA_DIR outside pytest's temporary root.

    As root, pgserver runs PostgreSQL as the user `pgserver` and opens the directories above
    DATA_DIR to it; a pytest session starting meanwhile (another checkout's) sets its root
    back to 0700, and PostgreSQL can no longer reach its data.
    """
    path = Path(tempfile.mkdtemp(prefix="ta-test-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def postgres_using(data_dir: Path) -> list[int]:
    """Pids of postgres processes whose command line names `data_dir` (a scan of /proc)."""
    needle = str(data_dir.resolve()).encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv[0].endswith(b"postgres") and any(needle in arg for arg in argv[1:]):
            pids.append(int(entry.name))
    return pids
