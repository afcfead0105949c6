"""The `task-assistant` command as a newcomer meets it: `--help` and `--version` at once, the
settings named, one development-token lifetime, `migrate` saying what it did, and `make run`
ending with exit code 0 on SIGTERM (with HEAD answered on the way)."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import httpx
import jwt
import pytest

from backend.auth.devkeys import DEV_TOKEN_TTL_SECONDS
from backend.server.cli import DEV_TOKEN_HOURS
from bench.env import isolated_env
from bench.servers import free_port, wait_http
from tests.support import ROOT
from tests.support.db import create_database, drop_database, server_url

CLI = Path(sys.executable).with_name("task-assistant")
HEAVY = ("fastapi", "starlette", "sqlalchemy", "uvicorn", "pydantic", "jwt", "backend.main")


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CLI), *args],
        env=env if env is not None else isolated_env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_version_answers_at_once_importing_nothing_heavy() -> None:
    started = time.monotonic()
    result = _run("--version")
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"task-assistant {version('task-assistant')}\n"
    assert elapsed < 1.0, f"--version took {elapsed:.2f} s"

    probe = (
        "import sys\n"
        "from backend.server import cli\n"
        "for argv in (['--version'], ['--help'], ['serve', '--help'], ['token', '--help']):\n"
        "    try:\n"
        "        cli.main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        f"print(sorted({{m.split('.')[0] if m.split('.')[0] != 'backend' else m "
        f"for m in sys.modules if m.startswith({HEAVY!r})}}), file=sys.stderr)\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stderr.strip() == "[]", loaded.stderr


def test_help_describes_the_commands_defaults_and_settings() -> None:
    top = _run("--help")
    assert top.returncode == 0
    said = " ".join(top.stdout.split())
    assert "a stateless, JWT-authenticated task-assistant chat API on PostgreSQL" in said
    for command in ("serve", "migrate", "check", "token", "--version"):
        assert command in said
    for setting in ("DATABASE_URL", "DATA_DIR", "LLM_API_KEY", "BETTER_AUTH_URL", "JWT_SECRET"):
        assert setting in said
    assert ".env" in said and "docs/configuration.md" in said

    serve = " ".join(_run("serve", "--help").stdout.split())
    assert "(default: 127.0.0.1)" in serve and "(default: 8000)" in serve
    assert "(default: None)" not in serve, "an option without a fixed default says where it is read"
    assert "exit code 0" in serve
    assert "from which revision to which" in " ".join(_run("migrate", "--help").stdout.split())


def test_one_token_lifetime_stated_in_help_and_minted(tmp_path: Path) -> None:
    assert f"{DEV_TOKEN_TTL_SECONDS / 3600:g} h" == DEV_TOKEN_HOURS
    token_help = " ".join(_run("token", "--help").stdout.split())
    assert f"valid {DEV_TOKEN_HOURS}" in token_help
    assert f"(default: {DEV_TOKEN_HOURS}" in token_help

    env = {**isolated_env(), "DATA_DIR": str(tmp_path)}
    env.pop("JWT_SECRET", None)
    minted = _run("token", "alice", env=env)
    assert minted.returncode == 0, minted.stderr
    claims = jwt.decode(minted.stdout.strip(), options={"verify_signature": False})
    assert claims["sub"] == "alice"
    assert claims["exp"] - claims["iat"] == DEV_TOKEN_TTL_SECONDS
    shorter = _run("token", "alice", "--ttl", "600", env=env)
    claims = jwt.decode(shorter.stdout.strip(), options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 600


@pytest.fixture
def empty_database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A new, empty database on the test server: `postgresql://…` (no driver named)."""
    server = server_url(tmp_path_factory.mktemp("pg-cli"))
    url, name = create_database(server)
    yield url
    if name:
        drop_database(server, name)


def _with_password(url: str, password: str) -> str:
    """`url` with a password (the test server trusts local connections and ignores it)."""
    return re.sub(r"^(postgresql[^:]*://)([^:@/]+)@", rf"\1\2:{password}@", url)


def test_migrate_says_what_it_did(empty_database: str) -> None:
    from backend.core.schema import code_revisions

    head, _ = code_revisions()
    name = empty_database.rpartition("/")[2].partition("?")[0]
    env = {**isolated_env(), "DATABASE_URL": _with_password(empty_database, "s3cret-pw")}

    first = _run("migrate", env=env)
    assert first.returncode == 0, first.stderr
    done = re.fullmatch(
        rf"Migrated (\S*{name}\S*(?: \(socket in \S+\))?) from revision none \(empty database\) to {head} \(head\)\.\n",
        first.stdout,
    )
    assert done, first.stdout
    again = _run("migrate", env=env)
    assert again.returncode == 0, again.stderr
    assert again.stdout == f"Already at revision {head} (head): {done[1]}, nothing to migrate.\n"

    closed = f"postgresql://postgres:s3cret-pw@127.0.0.1:{free_port()}/nowhere"
    refused = _run("migrate", env={**env, "DATABASE_URL": closed})
    assert refused.returncode == 1
    assert refused.stdout == ""
    assert refused.stderr.startswith("error: could not migrate 127.0.0.1:"), refused.stderr
    for output in (first, again, refused):
        assert "s3cret-pw" not in output.stdout + output.stderr


def test_make_run_answers_head_and_exits_0_on_sigterm(database_url: str, tmp_path: Path) -> None:
    make = shutil.which("make")
    if make is None or not (ROOT / ".venv" / "bin" / "task-assistant").exists():
        pytest.skip("needs make and the project's .venv (`make install`)")
    port = free_port()
    env = {
        **isolated_env(),
        "DATABASE_URL": database_url,
        "DATA_DIR": str(tmp_path),
        "LOG_LEVEL": "WARNING",
    }
    # -o: take the run install as done (this .venv is the test run's own, installed already).
    proc = subprocess.Popen(
        [make, "--no-print-directory", "-o", ".venv/.installed-run", "run", f"PORT={port}"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_http(base + "/health", proc)
        get = httpx.get(base + "/")
        head = httpx.head(base + "/")  # `curl -I`
        assert head.status_code == get.status_code == 200
        assert head.headers["content-length"] == str(len(get.content))
        assert head.content == b""

        server = subprocess.run(
            ["pgrep", "-P", str(proc.pid)], capture_output=True, text=True, check=True
        ).stdout.split()
        assert len(server) == 1, server  # `exec`: the server is make's own child
        subprocess.run(["kill", "-TERM", server[0]], check=True)
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
    output = proc.stdout.read() if proc.stdout else ""
    assert code == 0, output[-3000:]
    assert "make: ***" not in output
