"""`task-assistant check`: one tiny model call and one database round trip, each said in a
sentence, exit code 0 or 1."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from bench.env import isolated_env
from tests.support import ROOT
from tests.support.fakes import API_KEY
from tests.support.stub_llm import StubLLM


async def check(env: dict[str, str]) -> tuple[int, list[str]]:
    """`task-assistant check` in its own process (the stub keeps answering in this one): its
    exit code and the sentences it prints (log lines go to stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "backend.server.cli",
        "check",
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode().strip().splitlines()


@pytest.fixture
def check_env(database_url: str, data_dir: Path, stub: StubLLM) -> dict[str, str]:
    env = isolated_env()
    env.update(
        DATABASE_URL=database_url,
        DATA_DIR=str(data_dir),
        LLM_BASE_URL=stub.base_url,
        LLM_API_KEY=API_KEY,
        LLM_MODEL="stub-model",
        LLM_MAX_RETRIES="0",
        LOG_LEVEL="WARNING",
    )
    return env


async def test_check_says_both_work(check_env: dict[str, str], stub: StubLLM) -> None:
    stub.script("OK")
    code, said = await check(check_env)
    assert code == 0, said
    model, database = said[-2:]
    assert model.startswith("The model works: stub-model at " + stub.base_url), model
    assert database.startswith("The database works: PostgreSQL "), database
    assert "schema is up to date" in database
    assert len(stub.requests) == 1


async def test_check_names_a_refused_key_and_a_silent_database_and_exits_1(
    check_env: dict[str, str], stub: StubLLM
) -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    stub.script(
        {"status": 401, "body": {"error": {"message": f"Incorrect API key provided: {API_KEY}"}}}
    )
    check_env["DATABASE_URL"] = f"postgresql://nobody@127.0.0.1:{port}/none"
    check_env["DATABASE_CONNECT_TIMEOUT"] = "1"
    code, said = await check(check_env)
    assert code == 1, said
    assert said[-2] == (
        f"The model does not work: {stub.base_url} refused the API key in LLM_API_KEY "
        "(HTTP 401: Incorrect API key provided: [API key])."
    )
    assert said[-1].startswith(f"The database does not work: 127.0.0.1:{port}/none did not answer")
    assert API_KEY not in "\n".join(said)
