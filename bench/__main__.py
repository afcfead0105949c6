"""`make bench`: the service under load on this machine, against a local stub model.

Starts a PostgreSQL (embedded, or a fresh database on BENCH_DATABASE_URL's server), the
OpenAI-compatible stub (`tests.support.stub_llm`, its own process) and the service under uvicorn, once
per `--workers` count (by default one server with 1 worker and one with 2, both up for the whole
run; their CPU time and memory, summed over the uvicorn supervisor and its workers, are read from
/proc), then drives them over real HTTP with real EdDSA tokens. See bench/README.md for the
workloads and targets.

The parts: `procs` (/proc, py-spy), `servers` (database, processes, the baseline's tree),
`client` (a user's requests), `measure` (a server under load), `seed` (rows written directly),
`sizes`, `workloads` (the order of the run, W2-W6), `noisy` (W7), `exposure` (W8, W9: only
with --only), `crowd` (W10, its own server and event loop after the others), `report`.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import json
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from backend.auth.devkeys import load_or_create_dev_key
from bench import crowd, exposure, report
from bench.env import isolated_env
from bench.measure import Bench
from bench.procs import cpu_ms, py_spy
from bench.servers import ROOT, baseline_tree, database, free_port, serve, start, wait_http
from bench.sizes import SMOKE, Sizes
from bench.workloads import BASELINE, drive

__all__ = ["free_port", "main", "wait_http"]  # tests/test_web_browser.py imports the two


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--smoke", action="store_true", help="a few turns only (used by the tests)")
    parser.add_argument(
        "--only",
        default="W2,W3,W3s,W4,W5,W6,W7,W10",
        help="comma-separated workloads (W8 slow readers, W9 metrics flood: only when named)",
    )
    parser.add_argument(
        "--workers",
        default="1,2",
        help="uvicorn worker counts, one server each (W2, W3, W3s, W5, W6 run on every one)",
    )
    parser.add_argument(
        "--baseline",
        metavar="REV",
        help="also run W2, W5 and W6 on this git revision of the service (one worker, its own "
        "database, this venv), interleaved with the 1-worker server: `W2_cpu_over_baseline`",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        help="rounds of W2/W5/W6 (2 turns per user each; default 5): more for steadier ratios",
    )
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help="sample the server with py-spy during each workload but W7 (raw stacks in DIR, "
        "top frames printed; one round each, figures perturbed)",
    )
    return parser.parse_args()


def run(
    args: argparse.Namespace, sizes: Sizes, only: set[str], profile_dir: Path | None
) -> dict[str, Any]:
    """The database, the stub and the servers up for the run; the workloads' results."""
    counts = sorted({int(n) for n in args.workers.split(",")})
    with tempfile.TemporaryDirectory(prefix="ta-bench-") as tmp, ExitStack() as stack:
        tmp_path = Path(tmp)
        db_url = stack.enter_context(database(tmp_path))
        stub_port, server_port = free_port(), free_port()
        env = isolated_env()
        stub = start(
            [sys.executable, "-m", "tests.support.stub_llm", "--port", str(stub_port)], env, stack
        )
        wait_http(f"http://127.0.0.1:{stub_port}/v1/models", stub)
        env.update(
            DATABASE_URL=db_url,
            DATA_DIR=str(tmp_path / "data"),
            LLM_BASE_URL=f"http://127.0.0.1:{stub_port}/v1",
            LLM_API_KEY="bench",
            LLM_MODEL="stub-model",
            # Rate limiting stays on (its cost is part of a turn) with a limit the load never reaches.
            RATE_LIMIT_REQUESTS="1000000",
            # Likewise the process's turn bounds (W3 runs 100 turns at once; W10 uses the defaults).
            MAX_CONCURRENT_TURNS="10000",
            MAX_TURN_CPU="1.0",
            LOG_LEVEL="WARNING",
        )

        # The development key, before several workers race to create it.
        load_or_create_dev_key(tmp_path / "data")

        def bench_on(
            server_env: dict[str, str], port: int, workers: int = 1, source: Path = ROOT
        ) -> Bench:
            pid = serve(server_env, port, stack, workers, source).pid
            stub_url = f"http://127.0.0.1:{stub_port}/v1"
            url = server_env["DATABASE_URL"]
            return Bench(f"http://127.0.0.1:{port}", stub_url, pid, tmp_path / "data", url)

        benches = {
            n: bench_on(env, server_port if n == counts[0] else free_port(), n) for n in counts
        }
        if args.baseline:
            source = baseline_tree(args.baseline, tmp_path / "baseline")
            base_db = stack.enter_context(database(tmp_path, source))
            benches[BASELINE] = bench_on({**env, "DATABASE_URL": base_db}, free_port(), 1, source)
        others = {"stub": functools.partial(cpu_ms, stub.pid)}
        postmaster = tmp_path / "pg" / "postmaster.pid"
        if postmaster.exists():  # the embedded server (BENCH_DATABASE_URL's is not ours to read)
            pg = int(postmaster.read_text().split()[0])
            others["postgres"] = functools.partial(cpu_ms, pg)
        for b in benches.values():
            b.others.update(others)
            b.profile_dir = profile_dir
        # W7's and W10's server, with the product's default turn limits: one for both (their
        # users are distinct, and W10 starts after W7 has finished).
        unlimited = ("RATE_LIMIT_REQUESTS", "MAX_CONCURRENT_TURNS", "MAX_TURN_CPU")
        default_limits = {k: v for k, v in env.items() if k not in unlimited}
        defaults = bench_on(default_limits, free_port()) if only & {"W7", "W10"} else None
        limited = defaults if "W7" in only else None
        crowded = defaults if "W10" in only else None
        exposed: Bench | None = None
        if only & {"W8", "W9"}:
            # W8's and W9's own server, `task-assistant serve`: the protocol's deadlines too.
            port = free_port()
            pid = exposure.serve_product(env, port, stack)
            stub_url = f"http://127.0.0.1:{stub_port}/v1"
            exposed = Bench(f"http://127.0.0.1:{port}", stub_url, pid, tmp_path / "data", db_url)
            exposed.others.update(others)
        results = asyncio.run(drive(benches, sizes, only, limited, exposed))
        if crowded is not None:
            results["W10"] = asyncio.run(
                crowd.crowd(crowded, crowd.SMOKE if args.smoke else crowd.FULL)
            )
        return results


def main() -> None:
    args = parse_args()
    sizes = SMOKE if args.smoke else Sizes()
    if args.rounds:
        sizes = dataclasses.replace(sizes, rounds=args.rounds, w2_turns=2 * args.rounds)
    profile_dir = Path(args.profile).resolve() if args.profile else None
    if profile_dir is not None:
        if py_spy() is None:
            sys.exit("--profile needs py-spy (uv pip install --python .venv/bin/python py-spy)")
        profile_dir.mkdir(parents=True, exist_ok=True)
        # One contiguous stretch per workload, so that each has a profile of its own.
        sizes = dataclasses.replace(sizes, rounds=1)
    only = {w.strip().upper() for w in args.only.split(",")}
    results = run(args, sizes, only, profile_dir)
    results["machine"] = report.machine(args.smoke)
    print(report.table(results))
    for summary in report.profile_summaries(profile_dir):
        print(summary)
    print(json.dumps(results["machine"]))
    path = report.write_results(results, Path(args.out), args.smoke)
    print(f"results written to {path}")
    sys.exit(1 if report.failed(results) else 0)


if __name__ == "__main__":
    main()
