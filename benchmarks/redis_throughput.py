"""Redis backend benchmark: prints one JSON line per figure.

    python benchmarks/redis_throughput.py [--loop asyncio|trio] [--url redis://...]

Without ``--url`` it starts its own redis-server on a free loopback port.
Figures: producer events/s with 0, 1 and 100 live subscribers (subscribers in
another process, every one checked complete and in order), live latency
p50/p99 at 1,000 events/s with 100 subscribers, late replay of 10,000 events,
and the hub's Redis connection count.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from array import array
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import anyio
from anyio.streams.buffered import BufferedByteReceiveStream

from replayhub import Event, Hub, Producer

PAYLOAD = "x" * 20


async def send_fast(stream: Producer, data: str) -> None:
    """What a tight loop of sends does: queue without a checkpoint while
    the buffer has room, and wait (``send``) only when it is full."""
    try:
        stream.send_nowait(data)
    except anyio.WouldBlock:
        await stream.send(data)


#: How subscribers read: one event per ``await``, or ``batches()``.
MODES = ("events", "batches")


def emit(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def median_try(tries: list[dict[str, Any]], key: str, *also: str) -> dict[str, Any]:
    """The try of median ``key`` (builds run in turn, a try each), with
    every try's ``key`` and ``also`` figures listed as ``runs_<name>``."""
    ordered = sorted(tries, key=lambda row: float(row[key]))
    row = dict(ordered[len(ordered) // 2])
    for name in (key, *also):
        row[f"runs_{name}"] = [run[name] for run in tries]
    return row


@contextmanager
def redis_server() -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not installed (scripts/check installs it)")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as directory:
        process = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", directory],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            for _ in range(500):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                    break
                except OSError:
                    time.sleep(0.01)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            process.terminate()
            process.wait()


# -- the subscriber process -----------------------------------------------------


async def subscribers(
    url: str, session: str, count: int, expected: int, mode: str, timed: bool
) -> None:
    """Open ``count`` subscriptions, say "ready", read to the end, report.

    ``mode`` is ``events`` (``async for event in events``) or ``batches``
    (``async for batch in events.batches()``). Either way every event's id is
    checked against the expected sequence, so "complete" means every event,
    once, in order.
    """
    latencies: list[float] = []
    ready = 0
    finished_at = 0.0
    all_ready = anyio.Event()
    suffixes = [f"-{seq}" for seq in range(1, expected + 1)]

    readings: list[tuple[str, list[Event], array[float], array[int]]] = []

    async def one(hub: Hub) -> None:
        nonlocal ready, finished_at
        received: list[Event] = []
        # When, and how many events had come by then: kept in arrays, which
        # the garbage collector does not scan, so noting them adds no pauses.
        arrived_at, arrived_count = array("d"), array("q")
        async with hub.subscribe(session) as events:
            ready += 1
            if ready == count:
                all_ready.set()
            # Only keep what arrives while the clock runs; check it after.
            if mode == "batches":
                async for batch in events.batches():
                    received += batch
                    if timed:
                        arrived_at.append(time.time())
                        arrived_count.append(len(received))
            else:
                async for event in events:
                    received.append(event)
                    if timed:
                        arrived_at.append(time.time())
                        arrived_count.append(len(received))
            finished_at = max(finished_at, time.time())
            # Checked once every subscriber is done, not to hold up the others.
            readings.append((str(events.generation), received, arrived_at, arrived_count))

    async with Hub.from_url(url, namespace="bench") as hub, anyio.create_task_group() as tg:
        for _ in range(count):
            tg.start_soon(one, hub)
        await all_ready.wait()
        print("ready", flush=True)
    complete = 0
    for prefix, received, arrived_at, arrived_count in readings:
        if [event.id for event in received] == [prefix + suffix for suffix in suffixes]:
            complete += 1
        start = 0
        for arrived, end in zip(arrived_at, arrived_count, strict=True):
            for event in received[start:end]:
                assert isinstance(event.data, str)
                latencies.append(arrived - json.loads(event.data)["t"])
            start = end
    latencies.sort()
    print(
        json.dumps(
            {
                "complete_in_order": complete,
                "finished_at": finished_at,
                "p50_ms": 1000 * latencies[len(latencies) // 2] if latencies else None,
                "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)] if latencies else None,
            }
        ),
        flush=True,
    )


# -- the producer side ------------------------------------------------------------


class SubscriberProcess:
    def __init__(
        self,
        args: argparse.Namespace,
        url: str,
        session: str,
        count: int,
        expected: int,
        mode: str,
        *,
        timed: bool = False,
    ):
        self.command = [
            sys.executable, __file__, "--role", "subscribers", "--url", url, "--loop", args.loop,
            "--session", session, "--count", str(count), "--expected", str(expected),
            "--mode", mode, *(["--timed"] if timed else []),
        ]  # fmt: skip

    async def __aenter__(self) -> SubscriberProcess:
        self.process = await anyio.open_process(self.command, stderr=None)
        assert self.process.stdout is not None
        self.lines = BufferedByteReceiveStream(self.process.stdout)
        line = await self.lines.receive_until(b"\n", 1 << 20)
        assert line == b"ready", line
        return self

    async def result(self) -> dict[str, Any]:
        line = await self.lines.receive_until(b"\n", 1 << 20)
        result: dict[str, Any] = json.loads(line)
        await self.process.wait()
        return result

    async def __aexit__(self, *exc: object) -> None:
        if self.process.returncode is None:
            self.process.kill()
        await self.process.aclose()


async def throughput(
    args: argparse.Namespace, hub: Hub, url: str, subscribers_: int, mode: str = "events"
) -> None:
    """One producer sending as fast as it can. With subscribers, the
    delivered rate is the events over the time from the first send to the
    moment the last subscriber had the last event (clocks of one machine).
    A run lasts tens of milliseconds, so each figure is the median of
    ``--repeat`` runs, and the lowest run is reported beside it."""
    runs = [
        await _one_throughput_run(args, hub, url, subscribers_, mode, run)
        for run in range(args.repeat)
    ]
    figures: dict[str, Any] = {
        "figure": "producer_events_per_s",
        "loop": args.loop,
        "subscribers": subscribers_,
        "events": args.events,
        "runs": len(runs),
        "events_per_s": round(statistics.median(run[0] for run in runs)),
    }
    if subscribers_:
        delivered = [run[1] for run in runs]
        figures["mode"] = mode
        figures["delivered_events_per_s"] = round(statistics.median(delivered))
        figures["delivered_lowest"] = round(min(delivered))
        figures["complete_in_order"] = min(run[2] for run in runs)
    emit(**figures)


async def _one_throughput_run(
    args: argparse.Namespace, hub: Hub, url: str, subscribers_: int, mode: str, run: int
) -> tuple[float, float, int]:
    """Produced events/s, delivered events/s, subscribers complete and in order."""
    session = f"rate-{subscribers_}-{mode}-{run}"
    events = args.events
    async with hub.produce(session) as stream:
        if subscribers_:
            watchers = await SubscriberProcess(
                args, url, session, subscribers_, events, mode
            ).__aenter__()
        started, started_at = time.perf_counter(), time.time()
        for _ in range(events):
            await send_fast(stream, PAYLOAD)
        await stream.flush()
        produced = time.perf_counter() - started
    if not subscribers_:
        return events / produced, 0.0, 0
    result = await watchers.result()
    await watchers.__aexit__()
    delivered = events / (result["finished_at"] - started_at)
    return events / produced, delivered, int(result["complete_in_order"])


async def latency(args: argparse.Namespace, hub: Hub, url: str, count: int, mode: str) -> None:
    session, events, rate = f"latency-{mode}", 1000, 1000.0
    async with hub.produce(session) as stream:
        watchers = await SubscriberProcess(
            args, url, session, count, events, mode, timed=True
        ).__aenter__()
        start = anyio.current_time()
        for i in range(events):
            await anyio.sleep_until(start + i / rate)
            await stream.send(json.dumps({"t": time.time()}))
    result = await watchers.result()
    await watchers.__aexit__()
    emit(
        figure="live_latency",
        loop=args.loop,
        subscribers=count,
        mode=mode,
        rate_per_s=rate,
        p50_ms=round(result["p50_ms"], 3),
        p99_ms=round(result["p99_ms"], 3),
        complete_in_order=result["complete_in_order"],
    )


async def late_replay(args: argparse.Namespace, hub: Hub) -> None:
    session, events = "replay", 10_000
    async with hub.produce(session) as stream:
        for _ in range(events):
            await send_fast(stream, PAYLOAD)
    for mode in MODES:
        timings = []
        for _ in range(5):
            started = time.perf_counter()
            async with hub.subscribe(session) as replay:
                if mode == "batches":
                    received = sum([len(batch) async for batch in replay.batches()])
                else:
                    received = len([event async for event in replay])
            timings.append(time.perf_counter() - started)
            assert received == events
        emit(
            figure="late_replay",
            loop=args.loop,
            mode=mode,
            events=events,
            median_ms=round(1000 * statistics.median(timings), 2),
        )


async def connections(args: argparse.Namespace, hub: Hub, url: str) -> None:
    port = url.rsplit(":", 1)[1].split("/")[0]
    listing = (await anyio.run_process(["redis-cli", "-p", port, "CLIENT", "LIST"])).stdout
    emit(figure="redis_connections", loop=args.loop, server_total=listing.count(b"\n") - 1)


async def main(args: argparse.Namespace, url: str) -> None:
    async with Hub.from_url(url, namespace="bench", max_events=1_000_000) as hub:
        await throughput(args, hub, url, 0)
        for mode in MODES:
            for count in (1, 100):
                await throughput(args, hub, url, count, mode)
        for mode in MODES:
            await latency(args, hub, url, 100, mode)
        await late_replay(args, hub)
        await connections(args, hub, url)


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--loop", choices=["asyncio", "trio"], default="asyncio")
    parser.add_argument("--url")
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs per throughput figure")
    parser.add_argument("--role", choices=["bench", "subscribers"], default="bench")
    parser.add_argument("--session")
    parser.add_argument("--count", type=int)
    parser.add_argument("--expected", type=int)
    parser.add_argument("--mode", choices=MODES, default="events")
    parser.add_argument("--timed", action="store_true", help="note each arrival's time")
    add_driver_option(parser)
    args = parser.parse_args()
    if args.role == "subscribers":
        anyio.run(
            subscribers,
            args.url,
            args.session,
            args.count,
            args.expected,
            args.mode,
            args.timed,
            backend=args.loop,
        )
    else:
        run_on_redis(main, args)


def add_driver_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--driver",
        choices=["coredis", "redis-py"],
        default="coredis",
        help="the Redis client library the hubs use (redis-py: asyncio only)",
    )


def run_on_redis(main: Any, args: argparse.Namespace) -> None:
    """``main(args, url)`` on ``args.loop``, against ``args.url`` or a
    redis-server of its own; the URL names ``args.driver``."""
    if args.url:
        anyio.run(main, args, with_driver(args.url, args.driver), backend=args.loop)
    else:
        with redis_server() as url:
            anyio.run(main, args, with_driver(url, args.driver), backend=args.loop)


def with_driver(url: str, driver: str) -> str:
    """``url`` naming ``driver`` (``?driver=``), unless it names one already."""
    return url if "driver=" in url else f"{url}{'&' if '?' in url else '?'}driver={driver}"


def plain(url: str) -> str:
    """``url`` without replayhub's query options, for a bare client."""
    return url.split("?", 1)[0]


if __name__ == "__main__":
    cli()
