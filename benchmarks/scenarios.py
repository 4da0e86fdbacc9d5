"""More benchmark scenarios: the raw ceilings, the memory backend, idle
subscriptions' memory, a realistic fleet, and Redis at a distance. Prints one
JSON line per figure.

    python benchmarks/scenarios.py [--loop asyncio|trio] [--url redis://...]

Without ``--url`` it starts its own redis-server on a free loopback port.
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import statistics
import time
import tracemalloc
from typing import Any

import anyio
from delay_proxy import serve_delay_proxy
from redis_throughput import PAYLOAD, add_driver_option, emit, plain, run_on_redis, send_fast

from replayhub import BackendUnavailableError, Hub, LeaseLostError


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


# -- ceilings -------------------------------------------------------------------------


async def redis_benchmark_ceiling(url: str, pipeline: int) -> None:
    """redis-benchmark's XADD of 20 bytes: one client unpipelined, or pipelined."""
    command = [
        "redis-benchmark", "-p", str(port_of(url)), "-n", "200000", "-q",
        "-c", "1" if pipeline == 1 else "4", "-P", str(pipeline),
        "XADD", "bench:ceiling", "*", "f", PAYLOAD,
    ]  # fmt: skip
    output = (await anyio.run_process(command)).stdout.decode()
    rate = float(re.findall(r"([\d.]+) requests per second", output)[-1])
    emit(figure="ceiling_redis_benchmark_xadd", pipeline=pipeline, events_per_s=round(rate))


async def coredis_pipeline_ceiling(url: str, loop: str) -> None:
    """A bare coredis loop: 10,000 XADD in pipelines of 100, what one Python
    process on this client library can push."""
    import coredis

    async with coredis.Redis.from_url(plain(url)) as client:
        started = time.perf_counter()
        for _ in range(100):
            async with client.pipeline(transaction=False) as pipe:
                for _ in range(100):
                    pipe.xadd("bench:coredis", {"f": PAYLOAD})
        elapsed = time.perf_counter() - started
        await client.delete(["bench:coredis", "bench:ceiling"])
    emit(figure="ceiling_coredis_pipeline_xadd", loop=loop, events_per_s=round(10_000 / elapsed))


# -- the memory backend ---------------------------------------------------------------


async def memory_rate(loop: str, mode: str, events: int, repeat: int) -> None:
    """1 producer → 1 live consumer, in process, on the memory backend; the
    consumer reads per event or with ``batches()`` (``mode``). The median of
    ``repeat`` runs, each on a fresh hub: 10,000 events as in the Redis
    scenarios, and one long stream, where the garbage collector's full passes
    over the growing log take their share."""
    delivered_rates, produced_rates = [], []
    for _ in range(repeat):
        produced, delivered = await _memory_run(mode, events)
        produced_rates.append(events / produced)
        delivered_rates.append(events / delivered)
    emit(
        figure="memory_backend_events_per_s",
        loop=loop,
        mode=mode,
        events=events,
        runs=repeat,
        produced_per_s=round(statistics.median(produced_rates)),
        delivered_per_s=round(statistics.median(delivered_rates)),
        delivered_lowest=round(min(delivered_rates)),
    )


async def _memory_run(mode: str, events: int) -> tuple[float, float]:
    """Seconds until the producer's block ended, and until the consumer had all."""
    async with Hub(max_events=events) as hub, anyio.create_task_group() as task_group:
        received = 0
        claimed = anyio.Event()

        async def consume() -> None:
            nonlocal received
            await claimed.wait()
            async with hub.subscribe("rate") as stream:
                if mode == "batches":
                    async for batch in stream.batches():
                        received += len(batch)
                else:
                    async for _ in stream:
                        received += 1

        task_group.start_soon(consume)
        started = time.perf_counter()
        async with hub.produce("rate") as producer:
            claimed.set()
            for _ in range(events):
                await send_fast(producer, PAYLOAD)
        produced = time.perf_counter() - started
    delivered = time.perf_counter() - started
    assert received == events
    return produced, delivered


# -- idle subscriptions ----------------------------------------------------------------


async def idle_subscription_memory(url: str | None, loop: str, count: int = 10_000) -> None:
    """Python memory per idle subscription (waiting on a live session),
    opened 500 at a time; and, in the same run, per task that waits on
    nothing, the part of each figure that is the caller's task, not replayhub."""
    hub = Hub.from_url(url, namespace="idle") if url else Hub()
    async with hub, hub.produce("idle") as producer:
        await producer.send(PAYLOAD)
        await producer.flush()
        never = anyio.Event()

        async def idle(*, task_status: anyio.abc.TaskStatus[None]) -> None:
            async with hub.subscribe("idle", after=f"{producer.generation}-1") as events:
                task_status.started()
                async for _ in events:
                    pass

        async def bare_task(*, task_status: anyio.abc.TaskStatus[None]) -> None:
            task_status.started()
            await never.wait()

        with_subscription = await _bytes_per_task(idle, count)
        task_alone = await _bytes_per_task(bare_task, count)
    emit(
        figure="idle_subscription_bytes",
        loop=loop,
        backend="redis" if url else "memory",
        subscriptions=count,
        bytes_each=with_subscription,
        waiting_task_alone=task_alone,
        subscription_alone=with_subscription - task_alone,
    )


async def _bytes_per_task(body: Any, count: int) -> int:
    """Python memory each of ``count`` tasks running ``body`` holds once started."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]

    async def open_batch(task_group: anyio.abc.TaskGroup) -> None:
        async with anyio.create_task_group() as batch:
            for _ in range(500):
                batch.start_soon(task_group.start, body)

    async with anyio.create_task_group() as task_group:
        for _ in range(count // 500):
            await open_batch(task_group)
        await anyio.sleep(0.2)
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        task_group.cancel_scope.cancel()
    return round((after - before) / count)


# -- a realistic fleet -----------------------------------------------------------------


async def fleet(url: str, loop: str, sessions: int, rate: float, seconds: float) -> None:
    """``sessions`` live sessions, each sending ``rate`` events/s for
    ``seconds``, two subscribers each, all in this process on one hub."""
    latencies: list[float] = []
    ready = anyio.Event()
    subscribed = 0
    lost = unfinished = 0

    async def produce(hub: Hub, session: str, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        nonlocal lost, unfinished
        try:
            async with hub.produce(session) as stream:
                task_status.started()
                await ready.wait()
                start = anyio.current_time()
                for index in range(int(rate * seconds)):
                    await anyio.sleep_until(start + index / rate)
                    await stream.send(repr(time.perf_counter()))
        except LeaseLostError:
            lost += 1  # the process fell a whole lease behind its heartbeats
        except BackendUnavailableError:
            unfinished += 1  # its terminal write waited past finalize_timeout

    async def follow(hub: Hub, session: str) -> None:
        nonlocal subscribed
        async with hub.subscribe(session) as events:
            subscribed += 1
            if subscribed == 2 * sessions:
                ready.set()
            async for event in events:
                latencies.append(time.perf_counter() - float(str(event.data)))

    async with Hub.from_url(url, namespace="fleet") as hub:
        async with anyio.create_task_group() as task_group:
            for index in range(sessions):
                await task_group.start(produce, hub, f"f{index}")
            for index in range(sessions):
                task_group.start_soon(follow, hub, f"f{index}")
                task_group.start_soon(follow, hub, f"f{index}")
            await ready.wait()
            cpu, wall = os.times(), time.perf_counter()
            await anyio.sleep(seconds / 2)
            listing = (
                await anyio.run_process(["redis-cli", "-p", str(port_of(url)), "CLIENT", "LIST"])
            ).stdout
        cpu_after, wall_after = os.times(), time.perf_counter()
    latencies.sort()
    expected = sessions * 2 * int(rate * seconds)
    used = (cpu_after.user + cpu_after.system) - (cpu.user + cpu.system)
    emit(
        figure="fleet",
        loop=loop,
        sessions=sessions,
        events_per_s_each=rate,
        subscribers_each=2,
        delivered=len(latencies),
        expected=expected,
        p50_ms=round(1000 * latencies[len(latencies) // 2], 2),
        p99_ms=round(1000 * latencies[int(len(latencies) * 0.99)], 2),
        redis_connections=listing.count(b"\n") - 1,
        producers_lost_lease=lost,
        producers_unfinished=unfinished,
        cpu_percent_of_one_core=round(100 * used / (wall_after - wall)),
    )


# -- Redis at a distance ---------------------------------------------------------------


async def distance(url: str, loop: str, delay: float = 0.010) -> None:
    """Through a proxy adding ``delay`` each way: producer rate (10,000
    events) and live latency at 100 events/s for one subscriber."""
    async with anyio.create_task_group() as task_group:
        port = await task_group.start(serve_delay_proxy, port_of(url), delay)
        far = f"redis://127.0.0.1:{port}/0" + url[len(plain(url)) :]  # the same driver
        async with Hub.from_url(far, namespace="far", lease_ttl=10) as hub:
            async with hub.produce("far-rate") as stream:
                started = time.perf_counter()
                for _ in range(10_000):
                    await send_fast(stream, PAYLOAD)
                await stream.flush()
                rate = 10_000 / (time.perf_counter() - started)

            latencies: list[float] = []
            async with (
                Hub.from_url(far, namespace="far") as reader,
                hub.produce("far-live") as stream,
            ):
                claimed = anyio.Event()

                async def follow() -> None:
                    async with reader.subscribe("far-live") as events:
                        claimed.set()
                        async for event in events:
                            latencies.append(time.perf_counter() - float(str(event.data)))

                async with anyio.create_task_group() as readers:
                    readers.start_soon(follow)
                    await claimed.wait()
                    start = anyio.current_time()
                    for index in range(300):
                        await anyio.sleep_until(start + index / 100)
                        await stream.send(repr(time.perf_counter()))
                    await stream.flush()
                    readers.cancel_scope.deadline = anyio.current_time() + 5
                    await _until(lambda: len(latencies) == 300)
                    readers.cancel_scope.cancel()
        task_group.cancel_scope.cancel()
    emit(
        figure="distance",
        loop=loop,
        added_rtt_ms=round(2000 * delay),
        producer_events_per_s=round(rate),
        live_p50_ms=round(1000 * statistics.median(latencies), 2),
        live_p99_ms=round(1000 * sorted(latencies)[int(len(latencies) * 0.99)], 2),
    )


async def _until(check: Any) -> None:
    while not check():  # noqa: ASYNC110 - a benchmark's own counter
        await anyio.sleep(0.01)


async def main(args: argparse.Namespace, url: str) -> None:
    await redis_benchmark_ceiling(url, 1)
    await redis_benchmark_ceiling(url, 16)
    await coredis_pipeline_ceiling(url, args.loop)
    for mode in ("events", "batches"):
        await memory_rate(args.loop, mode, events=10_000, repeat=15)
        await memory_rate(args.loop, mode, events=200_000, repeat=3)
    await idle_subscription_memory(None, args.loop)
    await idle_subscription_memory(url, args.loop)
    for sessions in sorted({args.fleet_sessions, min(200, args.fleet_sessions), 100}):
        await fleet(url, args.loop, sessions, 50.0, args.fleet_seconds)
    await distance(url, args.loop)


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--loop", choices=["asyncio", "trio"], default="asyncio")
    parser.add_argument("--url")
    parser.add_argument("--fleet-sessions", type=int, default=1000)
    parser.add_argument("--fleet-seconds", type=float, default=6.0)
    add_driver_option(parser)
    run_on_redis(main, parser.parse_args())


if __name__ == "__main__":
    cli()
