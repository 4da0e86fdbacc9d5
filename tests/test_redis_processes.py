"""The Redis backend across real OS processes: producer, subscribers and
cancel in different processes; a producer killed with SIGKILL; a producer
paused with SIGSTOP past its lease."""

from __future__ import annotations

import json
import signal
import sys
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream

from replayhub import Hub, SessionBusyError, State

from .helpers import collect, texts
from .redis_server import RedisServer

ROOT = Path(__file__).resolve().parent.parent
LEASE = 0.6

#: Each test runs on each Redis driver (redis-py on asyncio only).
pytestmark = pytest.mark.usefixtures("redis_driver")


class Role:
    """A ``tests.procs`` role running in its own process."""

    def __init__(self, process: Process) -> None:
        self.process = process
        assert process.stdout is not None
        self._lines = BufferedByteReceiveStream(process.stdout)

    async def line(self, seconds: float = 10) -> dict[str, Any]:
        with anyio.fail_after(seconds):
            raw = await self._lines.receive_until(b"\n", 10_000_000)
        result: dict[str, Any] = json.loads(raw)
        return result

    async def until(self, key: str, seconds: float = 10) -> dict[str, Any]:
        with anyio.fail_after(seconds):
            while key not in (line := await self.line(seconds)):
                pass
        return line

    def signal(self, signum: signal.Signals) -> None:
        self.process.send_signal(signum)


@asynccontextmanager
async def role(
    anyio_backend: str, server: RedisServer, namespace: str, name: str, *args: str
) -> AsyncIterator[Role]:
    command = [sys.executable, "-m", "tests.procs", name, server.url, namespace, "s"]
    process = await anyio.open_process(
        [*command, "--loop", anyio_backend, "--lease-ttl", str(LEASE), *args], cwd=ROOT
    )
    async with process:
        try:
            yield Role(process)
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGCONT)
                process.kill()
            with anyio.move_on_after(5, shield=True):
                await process.wait()


@pytest.fixture
def namespace(request: pytest.FixtureRequest) -> str:
    return f"mp-{abs(hash(request.node.nodeid))}"


def hub_on(server: RedisServer, namespace: str) -> Hub:
    return Hub.from_url(server.url, namespace=namespace, lease_ttl=LEASE)


async def test_producer_subscribers_and_cancel_in_separate_processes(
    anyio_backend: str, redis_server: RedisServer, namespace: str
) -> None:
    async with role(
        anyio_backend, redis_server, namespace, "produce", "--count", "300", "--pace", "0.002"
    ) as producer:
        await producer.until("claimed")
        async with (
            role(anyio_backend, redis_server, namespace, "subscribe") as first,
            role(anyio_backend, redis_server, namespace, "subscribe") as second,
        ):
            results = [await first.until("outcome", 30), await second.until("outcome", 30)]
        done = await producer.until("outcome", 30)
    assert done["outcome"] == "done"
    expected = [str(i) for i in range(300)]
    for result in results:
        assert result["outcome"] == "done"
        assert result["data"] == expected
    assert results[0]["ids"] == results[1]["ids"]

    async with role(
        anyio_backend, redis_server, namespace, "produce", "--count", "-1", "--pace", "0.002"
    ) as producer:
        await producer.until("stored")
        async with role(anyio_backend, redis_server, namespace, "subscribe") as reader:
            await reader.until("subscribed")
            async with role(
                anyio_backend, redis_server, namespace, "cancel", "--wait", "5"
            ) as canceller:
                assert (await canceller.line())["state"] == "cancelled"
            read = await reader.until("outcome")
        stopped = await producer.until("outcome")
    assert stopped["cancel_requested"] is True
    assert read["outcome"] == "cancelled"
    async with hub_on(redis_server, namespace) as hub:
        stored, outcome = await collect(hub, "s")
    assert outcome.state is State.CANCELLED
    assert texts(stored) == [str(i) for i in range(len(stored))]
    assert read["data"] == texts(stored)  # the live reader got every stored event


async def test_sigkilled_producer_is_abandoned_within_its_lease(
    anyio_backend: str, redis_server: RedisServer, namespace: str
) -> None:
    async with hub_on(redis_server, namespace) as hub:
        async with role(
            anyio_backend, redis_server, namespace, "produce", "--count", "-1", "--pace", "0.001"
        ) as producer:
            await producer.until("stored")
            async with hub.subscribe("s") as events:
                first = await events.__anext__()
                producer.signal(signal.SIGKILL)
                killed_at = anyio.current_time()
                with anyio.fail_after(LEASE + 2):
                    rest = [event async for event in events]
                    waited = await hub.cancel("s", wait=LEASE + 1)
                noticed = anyio.current_time() - killed_at
        assert events.outcome is not None
        assert events.outcome.state is State.ABANDONED
        assert waited is not None
        assert waited.state is State.ABANDONED
        assert noticed < LEASE + 0.5
        received = [first, *rest]
        # A gap-free prefix of what was sent: 0, 1, 2, ... with no hole.
        assert texts(received) == [str(i) for i in range(len(received))]
        assert len(received) >= 10


async def test_producer_paused_past_its_lease_writes_nothing_after_takeover(
    anyio_backend: str, redis_server: RedisServer, namespace: str
) -> None:
    async with hub_on(redis_server, namespace) as hub:
        async with role(
            anyio_backend,
            redis_server,
            namespace,
            "produce",
            "--count",
            "-1",
            "--pace",
            "0.001",
            "--report-every",
            "5",
        ) as stale:
            await stale.until("stored")
            stale.signal(signal.SIGSTOP)
            with pytest.raises(SessionBusyError):
                async with hub.produce("s"):
                    pass
            await anyio.sleep(LEASE + 0.2)
            async with hub.produce("s") as fresh:
                await fresh.send("new-0")
                await fresh.flush()
                stale.signal(signal.SIGCONT)
                lost = await stale.until("outcome")
                with anyio.fail_after(5):
                    returncode = await stale.process.wait()
                await fresh.send("new-1")
        assert lost["outcome"] == "lease-lost"
        assert returncode == 3
        events, outcome = await collect(hub, "s")
        assert texts(events) == ["new-0", "new-1"]
        assert {event.id.split("-")[0] for event in events} == {str(fresh.generation)}
        assert outcome.state is State.DONE


async def test_claim_races_across_processes_have_one_winner_per_round(
    anyio_backend: str, redis_server: RedisServer, namespace: str
) -> None:
    processes, rounds = 8, 500
    start_at = time.time() + 3  # every process starts racing at the same moment
    results = []
    async with AsyncExitStack() as stack:
        arguments = ["--count", str(rounds), "--start-at", str(start_at), "--lease-ttl", "10"]
        racers = [
            await stack.enter_async_context(
                role(anyio_backend, redis_server, namespace, "race", *arguments)
            )
            for _ in range(processes)
        ]
        for racer in racers:
            results.append((await racer.until("won", 60))["won"])
        for racer in racers:
            assert racer.process.stdin is not None
            await racer.process.stdin.send(b"release\n")
    wins = sorted(round_ for won in results for round_ in won)
    print(f"\nclaim races: {rounds} rounds x {processes} processes; wins per process "
          f"{[len(won) for won in results]}")  # fmt: skip
    assert wins == list(range(rounds))  # every round won exactly once
