"""The realistic load: many live chats in one process, each streaming ~50
tokens/s to two readers, against the bare event loop doing the same pacing.

    python benchmarks/fleet.py                      # the whole table, ~7 minutes
    python benchmarks/fleet.py --sessions 100,300 --kinds redis --loops asyncio
    python benchmarks/fleet.py --profile redis:asyncio:100   # cProfile of one run

Each run is a fresh child process (its CPU is its own), one JSON line each;
the table at the end is what ``docs/performance.md`` quotes. Kinds:

``floor``
    no library: one task per producer sleeping until its next send and
    putting the event (a tuple of its number and the same ~20-byte text
    the library's runs send) into one queue per reader (``asyncio.Queue``;
    Trio memory channels), one task per reader waiting on its queue and
    parsing the text as they do. What the event loop itself costs for this
    load.
``shape``
    what this library's per-event work comes to with no layers between a
    producer and its readers: an id and one ``Event`` per event, the
    checkpoint ``send`` makes, one ``deque`` and the library's own wake-up
    per reader, anyio task groups and a cancel scope per producer, and the
    same conversions the library's runs make. Not run by default.
``memory``, ``redis``, ``redis-py``
    one hub in the process, ``hub.produce`` per session and two
    ``hub.subscribe`` per session (Redis: a redis-server of this script's
    own on a free loopback port; ``redis`` through the coredis driver,
    ``redis-py`` through the redis-py driver, asyncio only).
``split``
    Redis (coredis), producers in one process and readers in another (workers and
    web servers are often apart): each process's CPU and the readers' p99.

A run sends ``rate`` events/s of ~20 bytes per session for ``seconds``, every
session paced from one common start. Latency is send to receive (one
system-wide monotonic clock, so also across the split processes); CPU is
the process's user+system time over the sending window, per event sent in
it. Also, on Redis: the late replay of a finished session's 10,000 events by
a fresh subscription, the first read of that session in its process: on a
fresh hub (which makes its first command connection during that read), and
on a hub that has served a read before.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import statistics
import subprocess
import sys
import time
from array import array
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import sniffio
from redis_throughput import emit, redis_server, send_fast

from replayhub import BackendUnavailableError, Hub, LeaseLostError

HERE = Path(__file__).resolve().parent
#: Seconds between the last reader subscribing and the common start.
LEAD_IN = 0.5
#: Seconds a run may take past its sending window to deliver the rest.
DRAIN = 30.0


class Tally:
    """What a run measures, in the process that measures it."""

    def __init__(
        self, sessions: int, rate: float, seconds: float, server_pid: int | None = None
    ) -> None:
        self.sessions, self.rate, self.seconds = sessions, rate, seconds
        self.per_session = int(rate * seconds)
        # An array, not a list: a list of 100,000+ floats is walked by every
        # full garbage collection (about 10 ms of each at 300 sessions,
        # measured), a pause the harness would add to what it measures.
        self.latencies = array("d")
        self.sent = 0
        self.leases_lost = 0
        self.cpu = self.wall = self.cpu_system = 0.0
        self.sent_in_window = 0
        #: The redis-server's CPU over the same window (None on memory).
        self.server_pid = server_pid
        self.server_cpu: float | None = None

    def measure_window(self) -> Callable[[], None]:
        """Call at the common start; the returned function once the run's
        work is done (every event delivered, or the drain time out), so a
        saturated run is charged for its backlog too."""
        times, wall, sent = os.times(), time.monotonic(), self.sent
        server = process_cpu(self.server_pid)

        def end() -> None:
            after = os.times()
            self.cpu = after.user + after.system - times.user - times.system
            self.cpu_system = after.system - times.system
            self.wall = time.monotonic() - wall
            self.sent_in_window = self.sent - sent
            if server is not None:
                self.server_cpu = process_cpu(self.server_pid) - server  # type: ignore[operator]

        return end

    def figures(self, **fields: Any) -> dict[str, Any]:
        latencies = sorted(self.latencies)

        def at(quantile: float) -> float | None:
            if not latencies:
                return None
            return round(
                1000 * latencies[min(len(latencies) - 1, int(len(latencies) * quantile))], 2
            )

        return {
            **fields,
            "sessions": self.sessions,
            "p50_ms": at(0.5),
            "p99_ms": at(0.99),
            "max_ms": round(1000 * latencies[-1], 2) if latencies else None,
            "cpu_percent": round(100 * self.cpu / max(self.wall, 1e-9), 1),
            "cpu_us_per_event": round(1e6 * self.cpu / max(1, self.sent_in_window), 1),
            "cpu_s": round(self.cpu, 3),
            "cpu_system_s": round(self.cpu_system, 3),
            **(
                {}
                if self.server_cpu is None
                else {
                    "server_cpu_percent": round(100 * self.server_cpu / max(self.wall, 1e-9), 1),
                    "server_us_per_event": round(
                        1e6 * self.server_cpu / max(1, self.sent_in_window), 1
                    ),
                }
            ),
            "sent_in_window": self.sent_in_window,
            "delivered": len(latencies),
            "leases_lost": self.leases_lost,
        }


def process_cpu(pid: int | None) -> float | None:
    """Seconds of CPU (user + system) process ``pid`` has used, from /proc."""
    if pid is None:
        return None
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def redis_pid(url: str | None) -> int | None:
    """The process id of the redis-server at ``url`` (INFO server), if any."""
    if not url:
        return None
    info = subprocess.run(
        ["redis-cli", "-u", url, "INFO", "server"], check=True, capture_output=True, text=True
    ).stdout
    return int(info.split("process_id:", 1)[1].split()[0])


# -- floors -----------------------------------------------------------------------------

# Each event of a floor is a sequence number and the same ~20-byte text the
# library's runs send (the send time, as ``repr`` writes it), parsed back
# by the reader the same way: the application's own work per event, which
# the floor must do too for its ratio to be the library's cost alone.


def floor_asyncio(tally: Tally, readers: int) -> None:
    import asyncio

    async def main() -> None:
        loop = asyncio.get_running_loop()
        queues = [[asyncio.Queue[Any]() for _ in range(readers)] for _ in range(tally.sessions)]

        async def produce(mine: list[asyncio.Queue[Any]], start: float) -> None:
            for index in range(tally.per_session):
                delay = start + index / tally.rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                item = (index + 1, repr(time.monotonic()))
                tally.sent += 1
                for queue in mine:
                    queue.put_nowait(item)
            for queue in mine:
                queue.put_nowait(None)

        async def read(queue: asyncio.Queue[Any]) -> None:
            while (item := await queue.get()) is not None:
                tally.latencies.append(time.monotonic() - float(str(item[1])))

        start = loop.time() + LEAD_IN
        tasks = [loop.create_task(read(queue)) for mine in queues for queue in mine]
        tasks += [loop.create_task(produce(mine, start)) for mine in queues]
        await asyncio.sleep(start - loop.time())
        end = tally.measure_window()
        await asyncio.wait_for(asyncio.gather(*tasks), tally.seconds + DRAIN)
        end()

    asyncio.run(main())


def floor_trio(tally: Tally, readers: int) -> None:
    import trio

    async def main() -> None:
        async def produce(mine: list[Any], start: float) -> None:
            for index in range(tally.per_session):
                await trio.sleep_until(start + index / tally.rate)
                item = (index + 1, repr(time.monotonic()))
                tally.sent += 1
                for channel in mine:
                    await channel.send(item)
            for channel in mine:
                await channel.aclose()

        async def read(channel: Any) -> None:
            async for item in channel:
                tally.latencies.append(time.monotonic() - float(str(item[1])))

        start = trio.current_time() + LEAD_IN
        end = None
        async with trio.open_nursery() as nursery:
            for _ in range(tally.sessions):
                mine = []
                for _ in range(readers):
                    send, receive = trio.open_memory_channel[tuple[int, str]](1000)
                    mine.append(send)
                    nursery.start_soon(read, receive)
                nursery.start_soon(produce, mine, start)
            await trio.sleep_until(start)
            end = tally.measure_window()
        end()

    trio.run(main)


def shape(tally: Tally, readers: int, loop: str) -> None:
    """The ``shape`` kind (the module's docstring says what it holds)."""
    from collections import deque

    from replayhub._events import Event
    from replayhub._wakeup import Wakeup, wakeup_factory
    from replayhub.backends._clock import loop_checkpoint

    class Reader:
        __slots__ = ("buffer", "wakeup")

        def __init__(self, wakeup: Wakeup) -> None:
            self.buffer: deque[Event | None] = deque()
            self.wakeup = wakeup

    async def produce(mine: list[Reader], start: float) -> None:
        checkpoint = loop_checkpoint()
        sleep_until = native_sleep_until()
        with anyio.CancelScope():
            for index in range(tally.per_session):
                await sleep_until(start + index / tally.rate)
                data = repr(time.monotonic())
                await checkpoint()
                event = Event(f"1-{index + 1}", "message", data)
                tally.sent += 1
                for reader in mine:
                    reader.buffer.append(event)
                    reader.wakeup.wake()
            for reader in mine:
                reader.buffer.append(None)
                reader.wakeup.wake()

    async def read(reader: Reader) -> None:
        buffer = reader.buffer
        while True:
            while not buffer:
                await reader.wakeup.wait()
            event = buffer.popleft()
            if event is None:
                return
            tally.latencies.append(time.monotonic() - float(str(event.data)))

    async def main() -> None:
        new_wakeup = wakeup_factory()
        sessions = [[Reader(new_wakeup()) for _ in range(readers)] for _ in range(tally.sessions)]
        start = anyio.current_time() + LEAD_IN
        async with anyio.create_task_group() as task_group:
            for mine in sessions:
                for reader in mine:
                    task_group.start_soon(read, reader)
            for mine in sessions:
                task_group.start_soon(produce, mine, start)
            await anyio.sleep_until(start)
            end = tally.measure_window()
        end()

    anyio.run(main, backend=loop)


# -- replayhub ----------------------------------------------------------------------------


async def follow_all(
    hub: Hub, tally: Tally, names: list[str], readers: int
) -> tuple[anyio.Event, Any]:
    """An event set once every reader is subscribed, and the task that runs
    ``readers`` subscriptions per session (start it with ``task_group.start``)."""
    opened = anyio.Event()
    count = 0

    async def follow(name: str) -> None:
        nonlocal count
        async with hub.subscribe(name) as events:
            count += 1
            if count == len(names) * readers:
                opened.set()
            async for event in events:
                tally.latencies.append(time.monotonic() - float(str(event.data)))

    async def run_all(*, task_status: Any) -> None:
        async with anyio.create_task_group() as task_group:
            for name in names:
                for _ in range(readers):
                    task_group.start_soon(follow, name)
            task_status.started()

    return opened, run_all


async def in_one_process(hub: Hub, tally: Tally, readers: int) -> None:
    names = [f"f{index}" for index in range(tally.sessions)]
    go = anyio.Event()
    begin = 0.0

    async def start() -> float:
        await go.wait()
        return begin

    async with anyio.create_task_group() as task_group:
        await task_group.start(_start_producers, hub, tally, names, start)
        opened, run_readers = await follow_all(hub, tally, names, readers)
        await task_group.start(run_readers)
        await opened.wait()
        begin = anyio.current_time() + LEAD_IN
        task_group.cancel_scope.deadline = begin + tally.seconds + DRAIN
        go.set()
        await anyio.sleep_until(begin)
        end = tally.measure_window()
    end()


async def _start_producers(
    hub: Hub, tally: Tally, names: list[str], start: Any, *, task_status: Any
) -> None:
    async with anyio.create_task_group() as task_group:
        claimed = anyio.Event()
        count = 0

        async def produce(name: str) -> None:
            nonlocal count
            try:
                async with hub.produce(name) as stream:
                    count += 1
                    if count == len(names):
                        claimed.set()
                    begin = await start()
                    sleep_until = native_sleep_until()
                    for index in range(tally.per_session):
                        await sleep_until(begin + index / tally.rate)
                        await stream.send(repr(time.monotonic()))
                        tally.sent += 1
            except LeaseLostError:
                tally.leases_lost += 1
            except BackendUnavailableError:
                tally.leases_lost += 1

        for name in names:
            task_group.start_soon(produce, name)
        await claimed.wait()
        task_status.started()


def native_sleep_until() -> Callable[[float], Awaitable[None]]:
    """The running loop's own pacing, as the floors pace (anyio's adds its
    look-up of the loop per call, which is the harness's cost, not the
    library's)."""
    if sniffio.current_async_library() == "trio":
        import trio

        return trio.sleep_until
    import asyncio

    loop = asyncio.get_running_loop()

    async def sleep_until(deadline: float) -> None:
        delay = deadline - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)

    return sleep_until


def open_hub(kind: str, url: str | None, namespace: str) -> Hub:
    if kind == "memory":
        return Hub()
    assert url is not None
    return Hub.from_url(url, namespace=namespace)


async def late_replay(
    url: str, chat_rate: bool, events: int = 10_000, repeat: int = 7
) -> tuple[list[float], list[float]]:
    """Seconds from subscribing to the last of ``events`` stored events of a
    finished session, the first read of that session in the process: each on
    a fresh hub (its first command connection made during the read), then
    each on one hub that has already served other reads, as a web process
    has (its command connection open).

    Written by a fast producer (write batches of hundreds of events), or,
    with ``chat_rate``, one event per write, as a model's tokens are
    stored as they come: a log of ``events`` entries, each decoded on its own.
    """
    names = [f"replay{index}" for index in range(2 * repeat)]
    async with Hub.from_url(url, namespace="late") as hub:
        if chat_rate:
            await write_one_by_one(hub, names, events)
        else:
            for name in names:
                async with hub.produce(name) as stream:
                    for index in range(events):
                        await send_fast(stream, f"{index:020d}")

    async def timed(hub: Hub, name: str) -> float:
        started = time.perf_counter()
        async with hub.subscribe(name) as subscription:
            count = sum([1 async for _ in subscription])
        assert count == events, count
        return time.perf_counter() - started

    fresh = []
    for name in names[:repeat]:
        async with Hub.from_url(url, namespace="late") as hub:
            fresh.append(await timed(hub, name))
    serving = []
    async with Hub.from_url(url, namespace="late") as hub:
        await hub.info("nothing")  # served a read before: a command connection is open
        for name in names[repeat:]:
            serving.append(await timed(hub, name))
    return fresh, serving


async def write_one_by_one(hub: Hub, names: list[str], events: int) -> None:
    """Sessions ``names`` of ``events`` each, every event its own write (and
    log entry); the sessions at once, so their writes share round trips."""

    async def produce(name: str) -> None:
        async with hub.produce(name) as stream:
            for index in range(events):
                await stream.send(f" token{index % 1000}")
                await stream.flush()

    async with anyio.create_task_group() as task_group:
        for name in names:
            task_group.start_soon(produce, name)


# -- the split run: producers here, readers in another process -------------------------------


async def split_producers(url: str, tally: Tally) -> None:
    """Claim, say ``claimed``, read the common start from stdin, send."""
    names = [f"f{index}" for index in range(tally.sessions)]
    begin: list[float] = []
    got_start = anyio.Event()

    async def start() -> float:
        await got_start.wait()
        return begin[0]

    async with Hub.from_url(url, namespace="split") as hub:
        async with anyio.create_task_group() as task_group:
            await task_group.start(_start_producers, hub, tally, names, start)
            print("claimed", flush=True)
            line = await anyio.to_thread.run_sync(sys.stdin.readline)
            # The common start, on the system-wide monotonic clock.
            at = float(line) - time.monotonic() + anyio.current_time()
            begin.append(at)
            got_start.set()
            await anyio.sleep_until(at)
            end = tally.measure_window()
        end()  # every producer finished


async def split_readers(url: str, tally: Tally, readers: int) -> None:
    names = [f"f{index}" for index in range(tally.sessions)]
    async with Hub.from_url(url, namespace="split") as hub:
        async with anyio.create_task_group() as task_group:
            opened, run_readers = await follow_all(hub, tally, names, readers)
            await task_group.start(run_readers)
            await opened.wait()
            print("subscribed", flush=True)
            line = await anyio.to_thread.run_sync(sys.stdin.readline)
            at = float(line) - time.monotonic() + anyio.current_time()
            task_group.cancel_scope.deadline = at + tally.seconds + DRAIN
            await anyio.sleep_until(at)
            end = tally.measure_window()
        end()  # every event delivered


# -- one run (a child process) ----------------------------------------------------------------


def freeze_start_up_heap(kind: str, url: str | None) -> None:
    """What a tuned application does once started: import what it serves
    with, then move every object made so far out of the collector's reach
    (``gc.freeze()``), so its full passes walk only what serving makes. The
    modules are most of a process's objects: coredis alone, with beartype,
    is about 44,000 (``docs/performance.md``)."""
    if kind != "floor" and url:
        importlib.import_module("replayhub.backends.redis")
        importlib.import_module("redis.asyncio" if "driver=redis-py" in url else "coredis")
    gc.collect()
    gc.freeze()


def child(args: argparse.Namespace) -> None:
    tally = Tally(args.sessions, args.rate, args.seconds, redis_pid(args.url))
    fields: dict[str, Any] = {"kind": args.kind, "loop": args.loop}
    if args.gc_freeze:
        freeze_start_up_heap(args.kind, args.url)
    if args.gc_threshold:
        gc.set_threshold(args.gc_threshold, *gc.get_threshold()[1:])
    fields.update(gc_tuning(args))
    if args.kind == "floor":
        (floor_asyncio if args.loop == "asyncio" else floor_trio)(tally, args.readers)
    elif args.kind == "shape":
        shape(tally, args.readers, args.loop)
    elif args.kind in ("memory", "redis", "redis-py"):

        async def main() -> None:
            async with open_hub(args.kind, args.url, f"n{os.getpid()}") as hub:
                await in_one_process(hub, tally, args.readers)

        anyio.run(main, backend=args.loop)
    elif args.kind == "split-producers":
        anyio.run(split_producers, args.url, tally, backend=args.loop)
    elif args.kind == "split-readers":
        anyio.run(split_readers, args.url, tally, args.readers, backend=args.loop)
    elif args.kind in ("late-replay", "late-replay-chat"):
        chat_rate = args.kind == "late-replay-chat"
        fresh, serving = anyio.run(late_replay, args.url, chat_rate, backend=args.loop)
        emit(
            figure="late_replay_cold",
            loop=args.loop,
            written="one event per write" if chat_rate else "in batches",
            events=10_000,
            median_ms=round(1000 * statistics.median(fresh), 2),
            runs_ms=[round(1000 * value, 1) for value in fresh],
            serving_median_ms=round(1000 * statistics.median(serving), 2),
            serving_runs_ms=[round(1000 * value, 1) for value in serving],
        )
        return
    emit(figure="fleet", **tally.figures(**fields), expected=expected(args))


def expected(args: argparse.Namespace) -> int:
    if args.kind == "split-producers":
        return 0
    return int(args.sessions * int(args.rate * args.seconds) * args.readers)


def child_command(
    kind: str, loop: str, sessions: int, args: argparse.Namespace, url: str
) -> list[str]:
    return [
        sys.executable, str(Path(__file__)), "--child", "--kind", kind, "--loop", loop,
        "--sessions", str(sessions), "--rate", str(args.rate), "--seconds", str(args.seconds),
        "--readers", str(args.readers), "--url", url,
        *(["--gc-freeze"] if args.gc_freeze else []),
        *(["--gc-threshold", str(args.gc_threshold)] if args.gc_threshold else []),
    ]  # fmt: skip


def build_env(src: str) -> dict[str, str] | None:
    """The environment of a child importing replayhub from ``src`` (a
    checkout's ``src`` directory; this one's when empty)."""
    return {**os.environ, "PYTHONPATH": src} if src else None


def run_child(command: list[str], src: str = "") -> dict[str, Any]:
    done = subprocess.run(
        command, capture_output=True, text=True, check=False, cwd=HERE, env=build_env(src)
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        return {"error": (done.stderr or done.stdout)[-600:], "command": command[3:]}
    row: dict[str, Any] = json.loads(lines[-1])
    return row


def start_child(
    kind: str, sessions: int, args: argparse.Namespace, url: str, src: str, *, ready: str
) -> subprocess.Popen[str]:
    """A split-run child, once it has printed ``ready``."""
    process = subprocess.Popen(
        child_command(kind, "asyncio", sessions, args, url),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=HERE, env=build_env(src),
    )  # fmt: skip
    assert process.stdout is not None
    assert process.stdout.readline().strip() == ready
    return process


def run_split(sessions: int, args: argparse.Namespace, url: str, src: str) -> dict[str, Any]:
    producers = start_child("split-producers", sessions, args, url, src, ready="claimed")
    # The readers subscribe once every session is claimed.
    readers = start_child("split-readers", sessions, args, url, src, ready="subscribed")
    assert producers.stdout is not None
    assert readers.stdout is not None
    start = f"{time.monotonic() + 1.0}\n"
    for process in (producers, readers):
        assert process.stdin
        process.stdin.write(start)
        process.stdin.flush()
    produced = json.loads(producers.stdout.read().strip().splitlines()[-1])
    read = json.loads(readers.stdout.read().strip().splitlines()[-1])
    producers.wait()
    readers.wait()
    return {
        "figure": "fleet",
        "kind": "split",
        "loop": "asyncio",
        "sessions": sessions,
        "p50_ms": read["p50_ms"],
        "p99_ms": read["p99_ms"],
        "max_ms": read["max_ms"],
        "producers_cpu_percent": produced["cpu_percent"],
        "readers_cpu_percent": read["cpu_percent"],
        # The producers' window: both processes see the same server.
        **(
            {"server_cpu_percent": produced["server_cpu_percent"]}
            if "server_cpu_percent" in produced
            else {}
        ),
        "cpu_us_per_event": round(
            1e6 * (produced["cpu_s"] + read["cpu_s"]) / max(1, produced["sent_in_window"]), 1
        ),
        "delivered": read["delivered"],
        "expected": sessions * int(args.rate * args.seconds) * args.readers,
        "leases_lost": produced["leases_lost"],
        **gc_tuning(args),
    }


# -- the table ---------------------------------------------------------------------------------


def gc_tuning(args: argparse.Namespace) -> dict[str, Any]:
    """How a run's garbage collector was tuned, for its row."""
    return {
        **({"gc_freeze": True} if args.gc_freeze else {}),
        **({"gc_threshold": args.gc_threshold} if args.gc_threshold else {}),
    }


def label(row: dict[str, Any]) -> str:
    """The row's kind, with its build and how its collector was tuned."""
    kind = f"{row['kind']} ({row['build']})" if row.get("build") else row["kind"]
    if row.get("gc_freeze"):
        kind += ", gc.freeze()"
    if row.get("gc_threshold"):
        kind += f", gc threshold {row['gc_threshold']}"
    return kind


def table(rows: list[dict[str, Any]]) -> str:
    floors = {
        (row["loop"], row["sessions"]): row["cpu_us_per_event"]
        for row in rows
        if row.get("kind") == "floor" and "cpu_us_per_event" in row
    }
    lines = [
        "| kind | loop | sessions | p50 / p99 / max ms | CPU % | CPU µs/event | vs floor "
        "| redis-server CPU % | delivered | leases lost |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if row.get("figure") != "fleet":
            continue
        if "error" in row:
            lines.append(f"| failed: {row['command']} | {row['error'][-200:]!r} |")
            continue
        floor = floors.get((row["loop"], row["sessions"]))
        ratio = f"{row['cpu_us_per_event'] / floor:.1f}" if floor else "—"
        cpu = (
            f"{row['producers_cpu_percent']} + {row['readers_cpu_percent']}"
            if row["kind"] == "split"
            else f"{row['cpu_percent']}"
        )
        kind = label(row)
        lines.append(
            f"| {kind} | {row['loop']} | {row['sessions']} "
            f"| {row['p50_ms']} / {row['p99_ms']} / {row['max_ms']} | {cpu} "
            f"| {row['cpu_us_per_event']} | {ratio} | {row.get('server_cpu_percent', '—')} "
            f"| {row['delivered']:,} of {row['expected']:,} "
            f"| {row['leases_lost']} |"
        )
    best: dict[tuple[str, str], int] = {}
    for row in rows:
        if row.get("figure") == "fleet" and "error" not in row and row["p99_ms"] is not None:
            complete = row["delivered"] == row["expected"] and not row["leases_lost"]
            if row["p99_ms"] <= 50 and complete:
                key = (label(row), row["loop"])
                best[key] = max(best.get(key, 0), row["sessions"])
    lines.append("")
    lines.append("Most sessions with p99 ≤ 50 ms, every event delivered, no lease lost:")
    for (kind, loop), sessions in sorted(best.items()):
        lines.append(f"- {kind}, {loop}: {sessions}")
    for row in rows:
        if row.get("figure") == "late_replay_cold":
            build = f" ({row['build']})" if row.get("build") else ""
            driver = " (redis-py)" if "redis-py" in row["kind"] else ""
            lines.append(
                f"- late replay of 10,000 events written {row['written']}, cold, "
                f"Redis{driver}{build}, {row['loop']}: "
                f"median {row['median_ms']} ms on a fresh hub, "
                f"{row['serving_median_ms']} ms on a hub already serving"
            )
    return "\n".join(lines)


def median_run(tries: list[dict[str, Any]]) -> dict[str, Any]:
    """The try with the median CPU per event (a failed try if any failed),
    with every try's CPU per event and p99 alongside."""
    failed = [row for row in tries if "error" in row]
    if failed:
        return failed[0]
    ordered = sorted(tries, key=lambda row: row["cpu_us_per_event"])
    row = dict(ordered[len(ordered) // 2])
    if len(tries) > 1:
        row["tries_cpu_us_per_event"] = [row["cpu_us_per_event"] for row in tries]
        row["tries_p99_ms"] = [row["p99_ms"] for row in tries]
    return row


#: The Redis driver of each kind that runs on Redis (the rest: coredis).
DRIVERS = {"redis-py": "redis-py"}


def loops_of(kind: str, args: argparse.Namespace) -> list[str]:
    """The loops ``kind`` runs on: redis-py has asyncio only."""
    loops: list[str] = args.loops.split(",")
    return [loop for loop in loops if loop == "asyncio"] if kind == "redis-py" else loops


def flush_redis(url: str) -> None:
    """Empty this script's own redis-server between runs."""
    subprocess.run(["redis-cli", "-u", url, "FLUSHALL"], check=False, capture_output=True)


def parent(args: argparse.Namespace) -> None:
    builds = [tuple(build.split("=", 1)) for build in args.build] or [("", "")]
    kinds = args.kinds.split(",")
    counts = [int(value) for value in args.sessions.split(",")]
    rows: list[dict[str, Any]] = []

    def record(row: dict[str, Any], label: str) -> None:
        row["build"] = label
        print(json.dumps(row), flush=True)
        rows.append(row)

    with redis_server() as server_url:
        # "redis" is the coredis driver, "redis-py" the other (asyncio only).
        urls = {kind: f"{server_url}?driver={DRIVERS.get(kind, 'coredis')}" for kind in kinds}
        fleet_kinds = [kind for kind in kinds if kind != "split"]
        tries: dict[tuple[str, str, int, str], list[dict[str, Any]]] = {}

        def labelled(kind: str) -> list[tuple[str, str]]:
            # The floors use no replayhub, the shape only its primitives:
            # once, whatever the builds.
            return builds if kind not in ("floor", "shape") else [("", "")]

        for loop in args.loops.split(","):
            for sessions in counts:
                # Every kind and build at one loop and session count in turn,
                # the floor among them, `repeat` times over: this machine's
                # speed drifts over minutes (the floor at 100 sessions cost
                # 8.4 and 14.7 us an event in two runs 16 minutes apart), so
                # each figure is run beside the floor it is divided by.
                for _ in range(args.repeat):
                    for kind in fleet_kinds:
                        if loop not in loops_of(kind, args):
                            continue
                        command = child_command(kind, loop, sessions, args, urls[kind])
                        for label, src in labelled(kind):
                            key = (kind, loop, sessions, label)
                            tries.setdefault(key, []).append(run_child(command, src))
                            flush_redis(server_url)
        for kind in fleet_kinds:
            for loop in loops_of(kind, args):
                for sessions in counts:
                    for label, _ in labelled(kind):
                        record(median_run(tries[kind, loop, sessions, label]), label)
        for kind in (kind for kind in kinds if kind in ("redis", "redis-py")):
            for loop in loops_of(kind, args):
                for replay in ("late-replay", "late-replay-chat"):
                    for label, src in builds:
                        command = child_command(replay, loop, 0, args, urls[kind])
                        row = run_child(command, src)
                        row["kind"] = "late-replay" if kind == "redis" else f"late-replay ({kind})"
                        record(row, label)
                        flush_redis(server_url)
        if "split" in kinds:
            for sessions in (int(value) for value in args.split_sessions.split(",")):
                for label, src in builds:
                    record(run_split(sessions, args, urls["split"], src), label)
                    flush_redis(server_url)
    print()
    print(table(rows))


def profile(args: argparse.Namespace) -> None:
    import cProfile
    import pstats

    kind, loop, sessions = args.profile.split(":")
    with redis_server() as url:
        command = child_command(kind, loop, int(sessions), args, url)
        target = HERE / "fleet.prof"
        subprocess.run(
            [sys.executable, "-m", "cProfile", "-o", str(target), *command[1:]],
            check=True,
            cwd=HERE,
        )
    stats = pstats.Stats(str(target))
    stats.sort_stats("tottime").print_stats(30)
    del cProfile


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", default="100,150,200,300,400,1000")
    parser.add_argument("--split-sessions", default="200")
    parser.add_argument("--kinds", default="floor,memory,redis,redis-py,split")
    parser.add_argument("--loops", default="asyncio,trio")
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--readers", type=int, default=2)
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs per figure; the one of median CPU is shown"
    )
    parser.add_argument(
        "--build",
        action="append",
        default=[],
        metavar="LABEL=SRC",
        help="also run replayhub from another checkout's src directory (A/B in one run); "
        "repeat for more, and give this one as e.g. new=src",
    )
    parser.add_argument(
        "--gc-freeze",
        action="store_true",
        help="each run freezes its start-up heap, as a tuned application does "
        "(gc.freeze() once the modules it serves with are imported)",
    )
    parser.add_argument(
        "--gc-threshold",
        type=int,
        default=0,
        metavar="N",
        help="each run sets the collector's first threshold to N (700 by default): "
        "gc.set_threshold(N, ...), as a tuned application may",
    )
    parser.add_argument("--profile", help="kind:loop:sessions, one run under cProfile")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--kind", help=argparse.SUPPRESS)
    parser.add_argument("--loop", default="asyncio", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.sessions = int(args.sessions)
        child(args)
    elif args.profile:
        profile(args)
    else:
        parent(args)


if __name__ == "__main__":
    cli()
