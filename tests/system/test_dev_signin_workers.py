"""Development sign-in across processes: the workers of one plain `uvicorn` start print one
secret, and a new start prints a new one."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from backend.auth import devlogin
from backend.auth.devkeys import load_or_create_dev_key
from backend.auth.devlogin import login_secret
from backend.web.devtoken import LOGIN_HEADER
from bench.env import isolated_env
from bench.servers import free_port
from tests.support import ROOT
from tests.support.devsignin import PLAYGROUND, TOKEN_PATH


def test_plain_uvicorn_workers_share_one_secret_and_a_new_start_gets_a_new_one(
    database_url: str, tmp_path: Path
) -> None:
    """`uvicorn backend.main:app --workers 2`, in its own process group as a shell starts it:
    both workers print the same address, derived from that group; this process's differs."""
    port = free_port()
    env = isolated_env()
    env.pop(devlogin.START_ENV, None)
    env.pop(devlogin.ADDRESS_ENV, None)
    env.update(DATABASE_URL=database_url, DATA_DIR=str(tmp_path), LOG_LEVEL="WARNING")
    log_path = tmp_path / "uvicorn.log"
    command = [sys.executable, "-m", "uvicorn", "backend.main:app", "--workers", "2"]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [*command, "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 180
        found: list[tuple[str, str]] = []
        while len(found) < 2:
            assert proc.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.2)
            found = PLAYGROUND.findall(log_path.read_text())
        assert found[0] == found[1] == (f"http://127.0.0.1:{port}", found[0][1])
        printed = found[0][1]
        key = load_or_create_dev_key(tmp_path)
        assert printed != login_secret(key), "another process group, another start"
        group = proc.pid  # the session's leader, as a shell's job would be
        boot = Path("/proc/sys/kernel/random/boot_id")
        if boot.exists():
            started = devlogin._process_start_time(group)
            expected = f"group:{boot.read_text().strip()}:{group}:{started}"
            assert printed == login_secret(key, expected)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            for _ in range(6):  # new connections: both workers answer some
                r = client.post(
                    TOKEN_PATH,
                    json={"user": "alice"},
                    headers={LOGIN_HEADER: printed, "Connection": "close"},
                )
                assert r.status_code == 200, r.text
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
