"""`task-assistant serve` refuses to start on settings that would accept forged tokens."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bench.env import isolated_env
from tests.support.fakes import SECRET


def test_serve_refuses_to_start_with_a_bare_jwt_secret(database_url: str, tmp_path: Path) -> None:
    env = {
        **isolated_env(),
        "JWT_SECRET": SECRET,
        "DATABASE_URL": database_url,
        "DATA_DIR": str(tmp_path),
    }
    done = subprocess.run(
        [sys.executable, "-m", "backend.server.cli", "serve", "--no-migrate", "--port", "0"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert "JWT_SECRET needs JWT_ISSUER and JWT_AUDIENCE" in done.stderr
    assert os.listdir(tmp_path) == []  # refused before doing anything
