"""`make example-test`: the Next.js example end to end, in a real browser.

1. `npm ci` (only when package-lock.json changed since the last install), then `next build`;
2. two fresh PostgreSQL databases on the machine's server, one for Better Auth (migrated with
   scripts/migrate.mjs) and one for the task API (migrated by `serve --migrate`);
3. the task API (`task-assistant serve`, trusting the example's Better Auth through its JWKS)
   and the built app (`next start`), each on a free loopback port;
4. e2e/test_example.py with pytest and Playwright in Debian's Chromium;
5. stops both servers and drops both databases, whatever happened (also on Ctrl-C or SIGTERM).

The server: EXAMPLE_DATABASE_URL, else TEST_DATABASE_URL, else
postgresql://postgres@127.0.0.1:5432/postgres. Only its address and credentials are used: the
databases are created next to the one it names, and dropped at the end.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

EXAMPLE = Path(__file__).resolve().parent.parent
REPO = EXAMPLE.parent.parent
TASK_ASSISTANT = Path(sys.executable).parent / "task-assistant"
NEXT = EXAMPLE / "node_modules" / "next" / "dist" / "bin" / "next"
STAMP = EXAMPLE / "node_modules" / ".npm-ci-lock.sha256"
DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
# Settings of the task API that would change what this test exercises (a real model, another
# auth mode, Redis, ...): the API is started without them.
API_ENV_DROP = {
    "DATABASE_URL", "DATA_DIR", "MIGRATE_ON_START", "BETTER_AUTH_URL", "BETTER_AUTH_JWKS_URL",
    "JWT_ISSUER", "JWT_AUDIENCE", "JWT_SECRET", "JWT_REQUIRE_ISSUER_AUDIENCE", "ALLOWED_ORIGINS",
    "LLM_BASE_URL", "LLM_API_KEY", "LLM_MODEL", "GEMINI_API_KEY", "GEMINI_MODEL", "OPENAI_API_KEY",
    "TOOLS_TRANSPORT", "MCP_SERVER_URL", "REDIS_URL", "WORKERS", "PROMETHEUS_MULTIPROC_DIR",
    "METRICS_TOKEN", "RATE_LIMIT_REQUESTS", "WRITE_RATE_LIMIT_REQUESTS", "READ_RATE_LIMIT_REQUESTS",
}  # fmt: skip


class Stop(Exception):
    """SIGTERM or SIGHUP: unwind so that everything started is stopped."""


def log(message: str) -> None:
    print(f"[example-test] {message}", flush=True)  # noqa: T201 (a command-line script)


@contextlib.contextmanager
def phase(name: str, times: dict[str, float]) -> Iterator[None]:
    start = time.monotonic()
    log(f"{name} ...")
    try:
        yield
    finally:
        times[name] = time.monotonic() - start
        log(f"{name}: {times[name]:.1f} s")


def run(cmd: list[str], *, check: bool = True, **kwargs: object) -> int:
    """Runs a command to its end; interrupted (Ctrl-C, SIGTERM), it is stopped the same way."""
    proc = subprocess.Popen(cmd, **kwargs)  # type: ignore[call-overload]
    try:
        code = int(proc.wait())
    except BaseException:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        raise
    if check and code != 0:
        raise subprocess.CalledProcessError(code, cmd)
    return code


def npm_ci() -> bool:
    """`npm ci` unless node_modules was installed from this very package-lock.json."""
    digest = hashlib.sha256((EXAMPLE / "package-lock.json").read_bytes()).hexdigest()
    if os.environ.get("EXAMPLE_NPM_CI") != "1" and STAMP.is_file() and STAMP.read_text() == digest:
        log("node_modules matches package-lock.json: npm ci skipped (EXAMPLE_NPM_CI=1 forces it)")
        return False
    run(["npm", "ci", "--no-audit", "--no-fund"], cwd=EXAMPLE)
    STAMP.write_text(digest)
    return True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_url() -> str:
    url = (
        os.environ.get("EXAMPLE_DATABASE_URL")
        or os.environ.get("TEST_DATABASE_URL")
        or DEFAULT_SERVER
    )
    parts = urlsplit(url)
    # SQLAlchemy's driver suffix means nothing to psycopg or node-postgres.
    scheme = "postgresql" if parts.scheme.startswith("postgres") else parts.scheme
    return urlunsplit((scheme, parts.netloc, parts.path, parts.query, ""))


def database_url(server: str, name: str) -> str:
    parts = urlsplit(server)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, ""))


@contextlib.contextmanager
def databases(server: str, *suffixes: str) -> Iterator[list[str]]:
    base = f"task_assistant_example_{secrets.token_hex(4)}"
    names = [f"{base}_{s}" for s in suffixes]
    created: list[str] = []
    try:
        with psycopg.connect(server, autocommit=True, connect_timeout=5) as conn:
            for name in names:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                created.append(name)
        log(
            f"databases {', '.join(names)} on {urlsplit(server).hostname}:{urlsplit(server).port or 5432}"
        )
        yield [database_url(server, n) for n in names]
    finally:
        if created:
            with psycopg.connect(server, autocommit=True, connect_timeout=5) as conn:
                for name in created:
                    conn.execute(
                        sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                            sql.Identifier(name)
                        )
                    )
            log(f"dropped {', '.join(created)}")


class Process:
    """A server in its own process group, logging to a file; stopped with SIGTERM, then SIGKILL."""

    def __init__(
        self, name: str, cmd: list[str], *, cwd: Path, env: dict[str, str], logdir: Path
    ) -> None:
        self.name = name
        self.logfile = logdir / f"{name}.log"
        with self.logfile.open("wb") as out:
            self.proc = subprocess.Popen(
                cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        log(f"started {name} (pid {self.proc.pid})")

    def tail(self, lines: int = 40) -> str:
        text = self.logfile.read_text(errors="replace").splitlines()
        return "\n".join(f"    {line}" for line in text[-lines:])

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)
        # Anything the server left in its group (it should leave nothing).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        log(f"stopped {self.name} (exit {self.proc.returncode})")


def wait_until_up(process: Process, url: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.proc.poll() is not None:
            raise RuntimeError(
                f"{process.name} exited ({process.proc.returncode}):\n{process.tail()}"
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.25)
    raise RuntimeError(
        f"{process.name} did not answer {url} within {timeout:.0f} s:\n{process.tail()}"
    )


def main() -> int:
    def on_signal(signum: int, _frame: object) -> None:
        raise Stop(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    started = time.monotonic()
    times: dict[str, float] = {}
    node_env = {**os.environ, "NEXT_TELEMETRY_DISABLED": "1"}
    if not shutil.which("chromium"):
        log("chromium is not installed: apt-get install -y chromium")
        return 2

    with phase("install (npm ci)", times):
        npm_ci()
    with phase("build (next build)", times):
        run(["node", str(NEXT), "build"], cwd=EXAMPLE, env=node_env)

    processes: list[Process] = []
    status = 1
    with contextlib.ExitStack() as stack:
        logdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="example-test-")))
        try:
            with phase("start (databases, migrations, API, Next.js)", times):
                auth_db, api_db = stack.enter_context(databases(server_url(), "auth", "api"))
                # Unwound first: the servers stop before their databases are dropped.
                stack.callback(lambda: [p.stop() for p in reversed(processes)])
                run(
                    ["node", "scripts/migrate.mjs"],
                    cwd=EXAMPLE,
                    env={**node_env, "DATABASE_URL": auth_db},
                )
                api_port, app_port = free_port(), free_port()
                app_url, api_url = f"http://127.0.0.1:{app_port}", f"http://127.0.0.1:{api_port}"
                api_env = {k: v for k, v in os.environ.items() if k.upper() not in API_ENV_DROP}
                api_env |= {
                    "DATABASE_URL": api_db,
                    "DATA_DIR": str(logdir / "data"),
                    # Tokens from the example's Better Auth: iss = aud = this origin, keys at
                    # {BETTER_AUTH_URL}/api/auth/jwks. The browser calls the API cross-origin.
                    "BETTER_AUTH_URL": app_url,
                    "ALLOWED_ORIGINS": app_url,
                }
                processes.append(
                    Process(
                        "api",
                        [
                            str(TASK_ASSISTANT),
                            "serve",
                            "--host",
                            "127.0.0.1",
                            "--port",
                            str(api_port),
                            "--migrate",
                        ],
                        cwd=logdir,  # no .env of the repository: the offline model, whatever the developer set
                        env=api_env,
                        logdir=logdir,
                    )
                )
                processes.append(
                    Process(
                        "next",
                        ["node", str(NEXT), "start", "-H", "127.0.0.1", "-p", str(app_port)],
                        cwd=EXAMPLE,
                        env={
                            **node_env,
                            "BETTER_AUTH_URL": app_url,
                            "BETTER_AUTH_SECRET": secrets.token_urlsafe(32),
                            "DATABASE_URL": auth_db,
                            "TASK_API_URL": api_url,
                        },
                        logdir=logdir,
                    )
                )
                wait_until_up(processes[0], f"{api_url}/health/ready")
                wait_until_up(processes[1], f"{app_url}/api/auth/ok")
                log(f"API at {api_url}, Next.js at {app_url}")
            with phase("test (pytest + Playwright)", times):
                env = {"EXAMPLE_APP_URL": app_url, "EXAMPLE_API_URL": api_url}
                status = run(
                    [
                        sys.executable,
                        "-m",
                        "pytest",
                        "-p",
                        "no:cacheprovider",
                        "-q",
                        str(EXAMPLE / "e2e"),
                    ],
                    check=False,
                    cwd=REPO,
                    env={**os.environ, **env},
                )
        except (Stop, KeyboardInterrupt) as exc:
            log(f"interrupted ({exc or 'Ctrl-C'}): stopping what was started")
            status = 130
        except Exception as exc:  # a server that did not start: say why, then clean up
            log(f"FAILED: {exc}")
            status = 1
        finally:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # let the clean-up finish
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
            if status not in (0, 130):
                for p in processes:
                    log(f"last lines of the {p.name} log:\n{p.tail()}")

    total = time.monotonic() - started
    summary = ", ".join(f"{name.split(' ')[0]} {seconds:.1f} s" for name, seconds in times.items())
    outcome = {0: "PASSED", 130: "INTERRUPTED"}.get(status, "FAILED")
    log(f"{outcome} in {total:.1f} s ({summary})")
    return status


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (Stop, KeyboardInterrupt):  # during the install or the build
        log("interrupted")
        sys.exit(130)
