"""Redis Cluster sizing: prints one JSON line per figure, then a Markdown table.

    python benchmarks/cluster_sizing.py [--loop asyncio|trio] [--sessions 1000]

Starts its own cluster of three primaries on free loopback ports. Measures,
per node: how sessions spread over the shards, Redis memory per finished
session (no events) and per stored event (20-byte payloads), and the
connections one hub holds while 100 sessions stream to 200 subscribers.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from redis_throughput import PAYLOAD, emit, send_fast
from tests.redis_server import RedisClusterNodes, RedisServer

from replayhub import Hub


def used_memory(node: RedisServer) -> int:
    for line in node.command("info", "memory").decode().splitlines():
        if line.startswith("used_memory:"):
            return int(line.split(":")[1])
    raise LookupError("used_memory")


def sessions_on(node: RedisServer) -> int:
    return len(node.command("--scan", "--pattern", "size:*:s").split())


def connections(node: RedisServer) -> int:
    return len(node.command("client", "list").decode().splitlines()) - 1  # minus redis-cli


async def fill(hub: Hub, prefix: str, sessions: int, events: int) -> None:
    limit = anyio.Semaphore(50)

    async def one(index: int) -> None:
        async with limit, hub.produce(f"{prefix}{index}") as stream:
            for _ in range(events):
                await send_fast(stream, PAYLOAD)

    async with anyio.create_task_group() as task_group:
        for index in range(sessions):
            task_group.start_soon(one, index)


async def measure(cluster: RedisClusterNodes, sessions: int, events: int) -> None:
    primaries = cluster.nodes
    async with Hub.from_url(cluster.url, namespace="size", retention=3600) as hub:
        base = [used_memory(node) for node in primaries]
        await fill(hub, "empty", sessions, 0)
        after_empty = [used_memory(node) for node in primaries]
        await fill(hub, "full", sessions, events)
        after_full = [used_memory(node) for node in primaries]
        per_session = (sum(after_empty) - sum(base)) / sessions
        per_event = (sum(after_full) - sum(after_empty) - per_session * sessions) / (
            sessions * events
        )
        emit(figure="memory_per_session_bytes", value=round(per_session))
        emit(figure="memory_per_event_bytes", value=round(per_event), payload_bytes=len(PAYLOAD))
        spread = [sessions_on(node) for node in primaries]
        for index, count in enumerate(spread):
            emit(figure="sessions_on_node", node=index, value=count)

        live = anyio.Event()
        streaming = [anyio.Event() for _ in range(100)]

        async def produce(index: int) -> None:
            async with hub.produce(f"live{index}") as stream:
                await stream.send(PAYLOAD)
                streaming[index].set()
                await live.wait()

        async def follow(index: int) -> None:
            async with hub.subscribe(f"live{index}") as events_:
                async for _ in events_:
                    pass

        async with anyio.create_task_group() as task_group:
            for index in range(100):
                task_group.start_soon(produce, index)
            for event in streaming:
                await event.wait()
            for index in range(200):
                task_group.start_soon(follow, index % 100)
            await anyio.sleep(1)
            counts = [connections(node) for node in primaries]
            live.set()
        for index, count in enumerate(counts):
            emit(figure="hub_connections_on_node", node=index, value=count)
        rows = [
            "| node | sessions | connections of one hub |",
            "|---|---|---|",
            *(
                f"| {index} | {spread[index]} | {counts[index]} |"
                for index in range(len(primaries))
            ),
        ]
        print("\n".join(rows))
        print(
            f"\nmemory: {per_session:,.0f} B per finished session, "
            f"{per_event:,.0f} B per stored {len(PAYLOAD)}-byte event"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loop", choices=["asyncio", "trio"], default="asyncio")
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--events", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        cluster = RedisClusterNodes(Path(directory)).start()
        try:
            anyio.run(measure, cluster, args.sessions, args.events, backend=args.loop)
        finally:
            cluster.stop()


if __name__ == "__main__":
    main()
