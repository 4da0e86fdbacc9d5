"""Faults with real processes and signals, and Redis with ACLs and TLS."""

from __future__ import annotations

import random
import signal
import sys
from pathlib import Path

import anyio
import pytest

from replayhub import BackendUnavailableError, Hub, State
from replayhub._feed import PAGE_SIZE, WINDOW

from .redis_server import RedisServer, acl_server, tls_server

ROOT = Path(__file__).resolve().parent.parent
LEASE = 0.5


@pytest.mark.usefixtures("redis_driver")
async def test_producers_sigkilled_at_random_moments(
    anyio_backend: str, redis_server: RedisServer
) -> None:
    runs, batch = 30, 10
    namespace = f"crash-{anyio_backend}"
    rng = random.Random(1234)
    tally: dict[str, int] = {}

    async def one_run(hub: Hub, index: int) -> None:
        session = f"run-{index}"
        count = rng.choice([0, 1, 5, 30, -1, -1])  # some finish right around the kill
        delay = rng.choice([0.0, 0.0, 0.005, 0.02, 0.05, 0.1])
        command = [
            sys.executable, "-m", "tests.procs", "produce", redis_server.url, namespace, session,
            "--loop", anyio_backend, "--lease-ttl", str(LEASE), "--count", str(count),
            "--pace", "0.001", "--report-every", "3",
        ]  # fmt: skip
        async with await anyio.open_process(command, cwd=ROOT) as process:
            assert process.stdout is not None
            with anyio.fail_after(15):
                await process.stdout.receive()  # "claimed": the session exists
            async with hub.subscribe(session) as events:
                await anyio.sleep(delay)
                if process.returncode is None:
                    process.send_signal(signal.SIGKILL)
                killed_at = anyio.current_time()
                with anyio.fail_after(LEASE + 3):
                    received = [event.data async for event in events]
                ended_after = anyio.current_time() - killed_at
            await process.wait()
        assert events.outcome is not None
        state = events.outcome.state
        # Killed at a random moment: abandoned, or done when the kill came
        # after its terminal write (process exit codes cannot tell the two
        # apart: a process killed just after writing `done` exits -9 too).
        assert state in (State.ABANDONED, State.DONE), state
        assert received == [str(i) for i in range(len(received))]  # gap-free prefix
        assert ended_after < LEASE + 0.5
        tally[state.value] = tally.get(state.value, 0) + 1

    async with Hub.from_url(redis_server.url, namespace=namespace, lease_ttl=LEASE) as hub:
        for start in range(0, runs, batch):
            async with anyio.create_task_group() as tg:
                for index in range(start, start + batch):
                    tg.start_soon(one_run, hub, index)
    print(f"\nSIGKILL at random moments: {runs} runs, outcomes {tally}, lost events 0")
    assert sum(tally.values()) == runs


async def test_a_stuck_consumer_costs_the_producer_nothing(redis_server: RedisServer) -> None:
    # Its two times are printed, not compared: they are figures, not a test.
    total, stall = 25_000, 2.0
    async with Hub.from_url(
        redis_server.url, namespace="stuck", max_events=total, buffer_size=4096
    ) as hub:
        # The same producer with nobody reading, as the baseline.
        async with hub.produce("alone") as stream:
            baseline_started = anyio.current_time()
            for i in range(total):
                await stream.send(i)
            await stream.flush()
            baseline = anyio.current_time() - baseline_started
        async with hub.produce("s") as stream:
            await stream.send(0)
            await stream.flush()
            async with hub.subscribe("s") as events:
                first = await events.__anext__()  # then it stops reading
                started = anyio.current_time()
                for i in range(1, total):
                    await stream.send(i)
                await stream.flush()
                produced_in = anyio.current_time() - started
                await anyio.sleep(max(0.0, stall - produced_in))
                # Bounded memory while stuck: a page here; the feed follows
                # the session on, in a window trimmed at twice its size.
                assert len(events._buffer) <= PAGE_SIZE
                assert events._feed is not None  # a live session's feed
                assert len(events._feed._events) <= 2 * WINDOW
                received = [first.data]
                async for event in events:
                    received.append(event.data)
                    if len(received) == total:
                        break
    print(
        f"\nstuck consumer ({stall:.0f}s): producer sent {total} events in {produced_in:.2f}s "
        f"(alone: {baseline:.2f}s)"
    )
    assert received == list(range(total))


@pytest.mark.usefixtures("redis_driver")
async def test_an_acl_user_limited_to_its_keys_runs_everything(tmp_path: Path) -> None:
    server = acl_server(tmp_path / "acl").start()
    try:
        url = f"redis://app:app-secret@127.0.0.1:{server.port}/0?driver={server.driver}"
        async with Hub.from_url(url, namespace="app") as hub:
            async with hub.produce("s") as stream:
                await stream.send("ok")
            async with hub.subscribe("s") as events:
                assert [event.data async for event in events] == ["ok"]
            assert await hub.cancel("s", wait=1) is not None
            assert [info.session_id for info in await hub.sessions()] == ["s"]
            assert await hub.remove("s")
        with pytest.raises(BackendUnavailableError):
            async with Hub.from_url(url, namespace="other") as hub:  # keys it may not touch
                async with hub.produce("s"):
                    pass
        with anyio.fail_after(15), pytest.raises(BackendUnavailableError):
            async with Hub.from_url(
                f"redis://app:wrong@127.0.0.1:{server.port}/0?driver={server.driver}"
            ):
                pass
    finally:
        server.stop()


@pytest.mark.usefixtures("redis_driver")
async def test_tls_with_a_self_signed_ca(tmp_path: Path) -> None:
    server, url = tls_server(tmp_path)
    try:
        async with Hub.from_url(url) as hub:
            async with hub.produce("s") as stream:
                await stream.send("over tls")
            async with hub.subscribe("s") as events:
                assert [event.data async for event in events] == ["over tls"]
        plain = f"{server.url}"  # no TLS: refused clearly
        with anyio.fail_after(15), pytest.raises(BackendUnavailableError):
            async with Hub.from_url(plain):
                pass
    finally:
        server.stop()
