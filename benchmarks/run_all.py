"""Every benchmark on both event loops and both Redis drivers, then one
Markdown table.

    python benchmarks/run_all.py [--out benchmarks/results.md] [--quick] [--table-only]

Runs ``redis_throughput.py`` and ``scenarios.py`` once per column (each
starts its own redis-server): asyncio on coredis, asyncio on redis-py, Trio
on coredis. Keeps their JSON lines in ``results.jsonl`` next to the table,
and writes the table: our figure, the issue's target, and where one applies
the raw ceiling measured in the same run and our ratio to it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
#: The table's columns: (event loop, Redis driver).
COLUMNS = {
    "asyncio": ("asyncio", "coredis"),
    "asyncio, redis-py": ("asyncio", "redis-py"),
    "trio": ("trio", "coredis"),
}
LOOPS = tuple(COLUMNS)


def run(script: str, column: str, extra: list[str]) -> list[dict[str, Any]]:
    loop, driver = COLUMNS[column]
    command = [sys.executable, str(HERE / script), "--loop", loop, "--driver", driver, *extra]
    print("$", " ".join(command[1:]), file=sys.stderr, flush=True)
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{' '.join(command[1:])} failed:\n{done.stderr[-4000:]}")
    output = done.stdout
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def pick(rows: list[dict[str, Any]], figure: str, **match: Any) -> dict[str, Any]:
    for row in rows:
        if row["figure"] == figure and all(row.get(k) == v for k, v in match.items()):
            return row
    raise LookupError(f"{figure} {match}")


def fleet_cell(figures: dict[str, Any]) -> str:
    return (
        "p99 {} ms, {} conn, {}% CPU, {:,}/{:,} delivered, {} leases lost, {} not finished"
    ).format(
        figures["p99_ms"],
        figures["redis_connections"],
        figures["cpu_percent_of_one_core"],
        figures["delivered"],
        figures["expected"],
        figures["producers_lost_lease"],
        figures.get("producers_unfinished", 0),
    )


def table(results: dict[str, list[dict[str, Any]]]) -> str:
    lines = [
        "| figure | target | " + " | ".join(LOOPS) + " |",
        "|---|---|" + "---|" * len(LOOPS),
    ]

    def row(name: str, target: str, cell: Any) -> None:
        lines.append(
            f"| {name} | {target} | " + " | ".join(cell(results[loop]) for loop in LOOPS) + " |"
        )

    def ratio(ours: float, ceiling: float) -> str:
        return f"{ours:,.0f} ({ours / ceiling:.0%} of {ceiling:,.0f})"

    row(
        "producer ev/s, 1 producer, 0 subscribers (vs coredis pipeline)",
        "—",
        lambda r: ratio(
            pick(r, "producer_events_per_s", subscribers=0)["events_per_s"],
            pick(r, "ceiling_coredis_pipeline_xadd")["events_per_s"],
        ),
    )

    def both_modes(r: list[dict[str, Any]], figure: str, key: str, **match: Any) -> str:
        return " / ".join(
            f"{pick(r, figure, mode=mode, **match)[key]:,}" for mode in ("events", "batches")
        )

    row(
        "delivered ev/s, 1 live consumer in another process: per event / batches()"
        " (vs redis-benchmark x16)",
        "≥ 150,000",
        lambda r: "{} ({:.0%} of {:,})".format(
            both_modes(r, "producer_events_per_s", "delivered_events_per_s", subscribers=1),
            pick(r, "producer_events_per_s", subscribers=1, mode="batches")[
                "delivered_events_per_s"
            ]
            / pick(r, "ceiling_redis_benchmark_xadd", pipeline=16)["events_per_s"],
            pick(r, "ceiling_redis_benchmark_xadd", pipeline=16)["events_per_s"],
        ),
    )
    row(
        "delivered ev/s, 100 live consumers in another process: per event / batches();"
        " complete in order",
        "≥ 100,000",
        lambda r: "{} ({}/100, {}/100)".format(
            both_modes(r, "producer_events_per_s", "delivered_events_per_s", subscribers=100),
            pick(r, "producer_events_per_s", subscribers=100, mode="events")["complete_in_order"],
            pick(r, "producer_events_per_s", subscribers=100, mode="batches")["complete_in_order"],
        ),
    )
    row(
        "live latency p50 / p99, 100 consumers @ 1,000 ev/s: per event; batches()",
        "≤ 1 / ≤ 5 ms",
        lambda r: "; ".join(
            "{} / {} ms".format(
                pick(r, "live_latency", mode=mode)["p50_ms"],
                pick(r, "live_latency", mode=mode)["p99_ms"],
            )
            for mode in ("events", "batches")
        ),
    )
    row(
        "late replay of 10,000 events: per event / batches()",
        "≤ 10 ms",
        lambda r: " / ".join(
            f"{pick(r, 'late_replay', mode=mode)['median_ms']} ms" for mode in ("events", "batches")
        ),
    )
    row(
        "fleet: 1,000 sessions x 50 ev/s x 2 subscribers: p99, connections, CPU",
        "≤ 20 ms, ≤ 8",
        lambda r: fleet_cell(pick(r, "fleet", sessions=1000)),
    )
    for sessions in (200, 100):
        row(
            f"fleet, {sessions} sessions x 50 ev/s x 2 subscribers",
            "—",
            lambda r, sessions=sessions: fleet_cell(pick(r, "fleet", sessions=sessions)),
        )

    def idle_cell(figure: dict[str, Any]) -> str:
        return "{:,} B ({:,} task + {:,} subscription)".format(
            figure["bytes_each"], figure["waiting_task_alone"], figure["subscription_alone"]
        )

    row(
        "idle subscription with its waiting task, memory; Redis backend",
        "≤ 4 KB",
        lambda r: "{}; {}".format(
            idle_cell(pick(r, "idle_subscription_bytes", backend="memory")),
            idle_cell(pick(r, "idle_subscription_bytes", backend="redis")),
        ),
    )
    row(
        "memory backend, 1 producer → 1 consumer, delivered ev/s: per event / batches();"
        " 10,000 events, 200,000 events",
        "≥ 1,000,000",
        lambda r: "; ".join(
            both_modes(r, "memory_backend_events_per_s", "delivered_per_s", events=events)
            for events in (10_000, 200_000)
        ),
    )
    row(
        "20 ms added RTT: producer ev/s; live p50",
        "≥ 20,000; ≤ 25 ms",
        lambda r: "{:,}; {} ms".format(
            pick(r, "distance")["producer_events_per_s"], pick(r, "distance")["live_p50_ms"]
        ),
    )
    row(
        "raw ceilings: redis-benchmark XADD 1 client / x16 pipelined",
        "—",
        lambda r: "{:,} / {:,}".format(
            pick(r, "ceiling_redis_benchmark_xadd", pipeline=1)["events_per_s"],
            pick(r, "ceiling_redis_benchmark_xadd", pipeline=16)["events_per_s"],
        ),
    )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "results.md")
    parser.add_argument("--quick", action="store_true", help="a smaller fleet, for a smoke run")
    parser.add_argument(
        "--table-only", action="store_true", help="rewrite the table from the last results.jsonl"
    )
    args = parser.parse_args()
    extra = ["--fleet-sessions", "200", "--fleet-seconds", "2"] if args.quick else []
    results: dict[str, list[dict[str, Any]]] = {loop: [] for loop in LOOPS}
    raw_path = args.out.with_suffix(".jsonl")
    if args.table_only:
        for line in raw_path.read_text().splitlines():
            row = json.loads(line)
            results[row["column"]].append(row)
    else:
        for loop in LOOPS:
            results[loop] = run("redis_throughput.py", loop, []) + run("scenarios.py", loop, extra)
        with raw_path.open("w") as raw:
            for loop in LOOPS:
                for line in results[loop]:
                    raw.write(json.dumps({**line, "column": loop}) + "\n")
    markdown = table(results)
    args.out.write_text(markdown)
    print(markdown)


if __name__ == "__main__":
    main()
