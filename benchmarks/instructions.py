"""Instructions per produced event, counted by valgrind: a figure that does
not drift with this machine's speed (CPU time does, by a third from one
minute to the next), for comparing two builds of a small change.

    python benchmarks/instructions.py memory
    python benchmarks/instructions.py redis --build old=/tmp/old/src --build new=src

Each figure is two runs under ``valgrind --tool=callgrind`` that differ only
in length; the difference of their instruction counts, divided by the
difference of their events, leaves start-up and shut-down out. Repeated,
a figure varies by about 0.1% (``fleet.py``'s harness) to 2% (the tick
harness). Run one figure at a time: two at once on this 2-core machine
slow each other, and ``fleet.py``'s harness, paced by the clock, then
gathers events differently (figures 10-25% off).

``floor``, ``shape``, ``memory``
    ``fleet.py``'s harness as it is (100 sessions, 2 readers each, paced
    from one start), at 5 events/s per session: under valgrind the process
    runs about fifty times slower, and at 50 events/s it would fall behind,
    which changes how events gather per loop turn.
``redis``, ``redis-py``, ``memory-tick``
    every session sends one event per tick, all in one turn of the loop,
    and the next tick waits until every reader has it: the gathering of a
    Redis hub's writes does not depend on valgrind's pace (in ``fleet.py``'s
    harness under valgrind a script call carried 2 writes, not 100). A
    redis-server of this script's own; instructions of this process only.
    ``memory-tick`` is the memory backend in the same harness: what Redis
    adds is the difference.

The figures are for comparison, build against build, kind against kind in
one harness; what a run costs in time is ``fleet.py``'s.
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio

from replayhub.backends.redis._packing import PACK_FROM_ENTRIES

HERE = Path(__file__).parent
SESSIONS, RATE = 100, 5.0
FLEET_SECONDS = (2, 8)
#: Both past the entries from which a finished session's log is rewritten:
#: with one run below it, each session's whole rewrite was charged to the
#: longer run's extra events (17k per event).
TICKS = (PACK_FROM_ENTRIES + 6, PACK_FROM_ENTRIES + 106)


def tick_child(url: str, ticks: int) -> None:
    """The tick harness (``redis``, ``redis-py``, ``memory-tick``): one event
    per session per tick."""
    from replayhub import Hub

    async def main() -> None:
        # A lease far longer than the run: renewals come by the clock, and
        # under valgrind's pace the clock would add its own count per event.
        hub = Hub.from_url(url, namespace=f"i{os.getpid()}", lease_ttl=3600)
        readers = 2 * SESSIONS
        tick_events = [anyio.Event() for _ in range(ticks)]
        received, all_received = 0, anyio.Event()
        opened = anyio.Event()
        claimed, counts = anyio.Event(), {"claimed": 0, "opened": 0}

        async def produce(name: str) -> None:
            async with hub.produce(name) as stream:
                counts["claimed"] += 1
                if counts["claimed"] == SESSIONS:
                    claimed.set()
                for tick in tick_events:
                    await tick.wait()
                    await stream.send("0123456789abcdefghij")

        async def follow(name: str) -> None:
            nonlocal received
            async with hub.subscribe(name) as events:
                counts["opened"] += 1
                if counts["opened"] == readers:
                    opened.set()
                async for _ in events:
                    received += 1
                    if received == readers:
                        all_received.set()

        async with hub, anyio.create_task_group() as task_group:
            names = [f"s{index}" for index in range(SESSIONS)]
            for name in names:
                task_group.start_soon(produce, name)
            await claimed.wait()  # (readers start on a session already live)
            for name in names:
                task_group.start_soon(follow, name)
                task_group.start_soon(follow, name)
            await opened.wait()
            # The collector's full passes walk every object the process
            # holds, start-up's included: 50-100 million instructions each,
            # and where they fall depends on timing. Start-up's objects are
            # moved out of their reach, as a tuned application does.
            gc.freeze()
            for tick in tick_events:
                received, all_received = 0, anyio.Event()
                tick.set()
                await all_received.wait()

    anyio.run(main)


def environment(src: str) -> dict[str, str] | None:
    """A child's environment, importing replayhub from ``src`` if given."""
    return {**os.environ, "PYTHONPATH": src} if src else None


def instructions(command: list[str], src: str) -> int:
    """The instructions valgrind counted for ``command``."""
    result = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *command],
        capture_output=True,
        text=True,
        env=environment(src),
        cwd=HERE,
        check=False,
    )
    found = re.search(r"Collected : (\d+)", result.stderr)
    if result.returncode or found is None:
        raise RuntimeError(f"no instruction count from valgrind:\n{result.stderr[-2000:]}")
    return int(found.group(1))


def per_event(kind: str, src: str, url: str) -> float:
    if kind == "memory-tick":
        return _tick_figure("memory://", src, url)
    if kind in ("redis", "redis-py"):
        driver = "coredis" if kind == "redis" else "redis-py"
        return _tick_figure(f"{url}?driver={driver}", src, url)
    return _fleet_figure(kind, src)


def _tick_figure(target: str, src: str, url: str) -> float:
    """The tick harness's figure on the hub at ``target`` (``url``: the
    Redis server, emptied before each run)."""
    counts = []
    for ticks in (1, *TICKS):
        subprocess.run(["redis-cli", "-u", url, "FLUSHALL"], check=True, capture_output=True)
        command = [sys.executable, __file__, "--tick-child", str(ticks), "--url", target]
        if ticks == 1:
            # Not counted: the server's first run loads the scripts, and
            # the first run counted would pay for it (40k per event).
            subprocess.run(command, check=True, cwd=HERE, env=environment(src))
        else:
            counts.append(instructions(command, src))
    return (counts[1] - counts[0]) / ((TICKS[1] - TICKS[0]) * SESSIONS)


def _fleet_figure(kind: str, src: str) -> float:
    """The figure of ``fleet.py``'s harness at :data:`RATE` events/s."""
    counts = []
    for seconds in FLEET_SECONDS:
        command = [
            sys.executable, "fleet.py", "--child", "--kind", kind, "--loop", "asyncio",
            "--sessions", str(SESSIONS), "--rate", str(RATE), "--seconds", str(seconds),
        ]  # fmt: skip
        counts.append(instructions(command, src))
    return (counts[1] - counts[0]) / ((FLEET_SECONDS[1] - FLEET_SECONDS[0]) * SESSIONS * RATE)


def main(args: argparse.Namespace) -> None:
    from redis_throughput import redis_server

    builds: list[Any] = [build.split("=", 1) for build in args.build] or [("", "")]
    with redis_server() as url:
        for kind in args.kinds.split(","):
            for label, src in builds:
                started = time.monotonic()
                figure = per_event(kind, src, url)
                print(
                    f"{kind:9} {label or '-':6} {figure / 1000:8.1f}k instructions per event"
                    f"  ({time.monotonic() - started:.0f} s)",
                    flush=True,
                )


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kinds", nargs="?", default="floor,memory,redis", help="comma-separated")
    parser.add_argument(
        "--build",
        action="append",
        default=[],
        metavar="LABEL=SRC",
        help="run replayhub from another checkout's src directory; repeat for an A/B",
    )
    parser.add_argument("--tick-child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.tick_child is not None:
        tick_child(args.url, args.tick_child)
    else:
        main(args)


if __name__ == "__main__":
    cli()
