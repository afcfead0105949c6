"""The workloads and the order they run in: W2, W5 and W6 interleaved round by round on every
server (and the --baseline build), their ratios, then W3/W3s, W4, W8, W9 and W7."""

from __future__ import annotations

import os
import secrets
import statistics
from typing import Any

from bench import exposure
from bench.client import percentile
from bench.measure import Bench, Load
from bench.noisy import noisy_neighbour
from bench.procs import rss_mb
from bench.sizes import Sizes

BASELINE = 0
"""The `benches` key of the --baseline server (one worker, another build of the service)."""


def label(workload: str, workers: int) -> str:
    """Results key: `W2` with one worker, `W2/2w` with two, `W2/baseline` on the baseline."""
    if workers == BASELINE:
        return f"{workload}/baseline"
    return workload if workers == 1 else f"{workload}/{workers}w"


TURN_LOADS = {"W2": "plain", "W5": "stream", "W6": "chatkit"}
"""W2 and the same turns streamed (W5) and through ChatKit (W6); they take turns, round by round."""


def turn_figures(load: Load) -> dict[str, Any]:
    run = load.run
    return {
        "turns": load.turns,
        "turns_per_s": round(load.turns / load.wall, 1),
        "p50_ms": round(percentile(run.latencies, 50), 1),
        "p95_ms": round(percentile(run.latencies, 95), 1),
        "cpu_ms_per_turn": round(load.cpu / load.turns, 2),
        **machine_figures(load),
        "events_per_turn": round(run.events / load.turns, 1),
        "errors": run.errors,
        "error_samples": run.error_samples[:3],
    }


def machine_figures(load: Load) -> dict[str, Any]:
    """Where the rest of the machine's CPU went: what caps throughput on two shared cores."""
    figures = {
        f"{name}_cpu_ms_per_turn": round(cpu / load.turns, 2)
        for name, cpu in load.other_cpu.items()
    }
    figures["machine_busy"] = round(load.machine[0] / max(load.machine[1], 1), 2)
    return figures


async def drive(
    benches: dict[int, Bench],
    sizes: Sizes,
    only: set[str],
    limited: Bench | None = None,
    exposed: Bench | None = None,
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    first = benches[min(n for n in benches if n != BASELINE)]
    await first.latency(0)
    for n, bench in benches.items():
        await bench.warm_up(sizes.warmup, max(n, 1))
    turn_loads = await turn_rounds(benches, sizes, only)
    for (w, n), load in turn_loads.items():
        figures = turn_figures(load)
        figures["users_with_wrong_tasks"] = await benches[n].check_tasks(
            load.users, load.turns_per_user, load.prefix
        )
        results[label(w, n)] = figures
    for n in benches:
        if found := ratios(n, results, turn_loads):
            results[label("ratios", n)] = found
    for n, bench in benches.items():
        if n == BASELINE:
            continue
        for w, kind in (("W3", "plain"), ("W3s", "stream")):
            if w.upper() in only:
                results[label(w, n)] = await slow_model(bench, sizes, kind)
    if "W4" in only:
        results["W4"] = await long_history(first, sizes)
    if exposed is not None:
        results.update(await exposure.run(exposed, sizes, only))
    if limited is not None:
        results["W7"] = await noisy_neighbour(limited, sizes)
        await limited.close()
    for n, bench in benches.items():
        results[label("server", n)] = {
            "workers": max(n, 1),
            "rss_mb_end": round(rss_mb(bench.pid), 1),
            "worker_restarts": bench.worker_restarts(),
        }
        await bench.close()
    return results


async def turn_rounds(
    benches: dict[int, Bench], sizes: Sizes, only: set[str]
) -> dict[tuple[str, int], Load]:
    """W2, W5 and W6 on every server, a few turns per user at a time, round after round."""
    # Each workload on the baseline right next to the same on the 1-worker server; then the
    # servers with more workers.
    single = sorted(n for n in benches if n <= 1)
    order = [(w, n) for w in TURN_LOADS for n in single]
    order += [(w, n) for n in benches if n > 1 for w in TURN_LOADS]
    turn_loads = {
        (w, n): Load(TURN_LOADS[w], label(w, n).lower().replace("/", "-"), sizes.w2_users)
        for w, n in order
        if w in only
    }
    per_round = max(1, sizes.w2_turns // sizes.rounds)
    # Every other round in reverse order, so that none of them always follows the same one.
    for round_no in range(sizes.rounds):
        loads = list(turn_loads.items())
        for (_, n), load in loads if round_no % 2 == 0 else reversed(loads):
            await benches[n].load_round(load, per_round)
    return turn_loads


def ratios(
    n: int, results: dict[str, Any], turn_loads: dict[tuple[str, int], Load]
) -> dict[str, Any]:
    """Server `n`'s ratios: W5 and W6 over W2, and over the baseline or over 1 worker."""
    found: dict[str, Any] = {}
    base = results.get(label("W2", n))
    for w in ("W5", "W6"):
        if base and label(w, n) in results:
            found[f"{w}_over_W2_cpu"] = round(
                results[label(w, n)]["cpu_ms_per_turn"] / base["cpu_ms_per_turn"], 2
            )
    if base and n == BASELINE:
        for w in ("W2", "W5", "W6"):
            if (w, 1) in turn_loads and (w, n) in turn_loads:
                ours, theirs = turn_loads[(w, 1)], turn_loads[(w, n)]
                found[f"{w}_cpu_over_baseline"] = round(ours.cpu / theirs.cpu, 2)
                # Round by round (the two ran back to back): the median resists a burst of
                # other work on the machine that hit one of them.
                pairs = sorted(a / b for a, b in zip(ours.round_cpu, theirs.round_cpu, strict=True))
                found[f"{w}_cpu_over_baseline_rounds"] = (
                    f"median {statistics.median(pairs):.2f} "
                    f"({pairs[0]:.2f} to {pairs[-1]:.2f}, {len(pairs)} rounds)"
                )
    elif base and n != 1 and "W2" in results:
        found["W2_turns_per_s_over_1_worker"] = round(
            base["turns_per_s"] / results["W2"]["turns_per_s"], 2
        )
        # The most n workers could gain over one busy worker when the bench's own processes
        # (PostgreSQL, stub, load generator) share the machine's cores with them.
        load = turn_loads[("W2", n)]
        bench_cpu = load.cpu + sum(load.other_cpu.values())
        cores = os.cpu_count() or 1
        found["W2_speedup_ceiling"] = round(min(n, cores * load.cpu / bench_cpu), 2)
    return found


async def slow_model(bench: Bench, sizes: Sizes, kind: str) -> dict[str, Any]:
    """W3 (W3s streamed): 100 users' turns at once against a slow model."""
    await bench.latency(sizes.w3_latency_ms)
    load = Load(kind, f"w3-{kind}-{secrets.token_hex(2)}", sizes.w3_users)
    await bench.load_round(load, sizes.w3_turns)
    await bench.latency(0)
    ideal = sizes.w3_turns * 2 * sizes.w3_latency_ms / 1000
    p95 = percentile(load.run.latencies, 95)
    return {
        "turns": load.turns,
        "wall_s": round(load.wall, 2),
        "ideal_s": ideal,
        "wall_vs_ideal": round(load.wall / ideal, 2),
        "p95_ms": round(p95, 1),
        "p95_vs_ideal_turn": round(p95 / (2 * sizes.w3_latency_ms), 2),
        "errors": load.run.errors,
        "users_with_wrong_tasks": await bench.check_tasks(
            load.users, load.turns_per_user, load.prefix
        ),
        "rss_mb_peak": round(load.rss_peak, 1),
        "cpu_ms_per_turn": round(load.cpu / load.turns, 2),
        **machine_figures(load),
        "error_samples": load.run.error_samples[:3],
    }


async def long_history(bench: Bench, sizes: Sizes) -> dict[str, Any]:
    """W4: turns in conversations of 10, 120 (the window already full) and 400 messages.

    Interleaved in batches, so that drift in machine load hits all three alike.
    """
    lengths = {"short": sizes.w4_short, "full": sizes.w4_full, "long": sizes.w4_long}
    latency: dict[str, list[float]] = {k: [] for k in lengths}
    cpu: dict[str, list[float]] = {k: [] for k in lengths}
    batches = 4
    for _ in range(batches):
        for k, messages in lengths.items():
            turn_latency, turn_cpu = await bench.history_turns(
                f"w4-{k}", messages, max(1, sizes.w4_samples // batches)
            )
            latency[k].append(turn_latency)
            cpu[k].append(turn_cpu)
    lat = {k: statistics.mean(v) for k, v in latency.items()}
    c = {k: statistics.mean(v) for k, v in cpu.items()}

    def ratio(a: float, b: float) -> float:
        return round(a / max(b, 0.01), 2)

    return {
        "short_messages": sizes.w4_short,
        "full_messages": sizes.w4_full,
        "long_messages": sizes.w4_long,
        "short_p50_ms": round(lat["short"], 1),
        "full_p50_ms": round(lat["full"], 1),
        "long_p50_ms": round(lat["long"], 1),
        "short_cpu_ms": round(c["short"], 2),
        "full_cpu_ms": round(c["full"], 2),
        "long_cpu_ms": round(c["long"], 2),
        "cpu_ratio": ratio(c["long"], c["short"]),
        "cpu_ratio_long_over_full": ratio(c["long"], c["full"]),
        "cpu_ratio_full_over_short": ratio(c["full"], c["short"]),
        "latency_ratio": ratio(lat["long"], lat["short"]),
    }
