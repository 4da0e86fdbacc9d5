"""Soak: 200 sessions x 200 events, two subscribers each, with random
cancels, failures and crashes, against one Redis. Every subscription must end
with the right outcome and a gap-free prefix (all of it unless the producer
crashed); no task or connection may leak; every key must expire."""

from __future__ import annotations

import itertools
import random
import time
from typing import Any

import anyio
import pytest

from replayhub import Hub, State
from replayhub._events import DataKind, StoredEvent

from .redis_server import RedisServer
from .test_redis_backend import client_count

# 60 producers and 120 readers live at any moment, 200 sessions in all (the
# realistic load at scale is the fleet benchmark's job, not a test's).
SESSIONS, EVENTS, CONCURRENCY = 200, 200, 60
# The lease leaves room for a loaded 2-core machine: 120 readers and 60
# writers share one process here, and a loop stalled past a lease is (rightly)
# a lost claim (seen once at 3 s on a slow machine). So does the retention: a
# reader starved for longer than it (seen at 1 s, and at 4 s on Trio with
# 100 producers at a time) rightly finds its session expired.
LEASE, RETENTION = 6.0, 8.0


class Boom(Exception):
    pass


async def test_soak(fresh_redis: RedisServer, anyio_backend: str) -> None:
    rng = random.Random(7)
    plans = rng.choices(["done", "failed", "cancelled", "crashed"], [80, 5, 10, 5], k=SESSIONS)
    results: list[tuple[str, State, list[Any]]] = []
    limiter = anyio.Semaphore(CONCURRENCY)
    started = time.monotonic()
    tasks_before = len(anyio.get_running_tasks())
    connections_before = client_count(fresh_redis)

    async with (
        Hub.from_url(fresh_redis.url, lease_ttl=LEASE, retention=RETENTION) as producers,
        Hub.from_url(fresh_redis.url, lease_ttl=LEASE, retention=RETENTION) as readers,
    ):

        async def subscribe(session_id: str, plan: str, delay: float) -> None:
            await anyio.sleep(delay)
            async with readers.subscribe(session_id) as events:
                data = [event.data async for event in events]
            assert events.outcome is not None
            results.append((plan, events.outcome.state, data))

        async def produce(index: int, plan: str) -> None:
            session_id = f"soak-{index}"
            pace = rng.uniform(0.0005, 0.003)
            async with limiter, anyio.create_task_group() as tg:
                if plan == "crashed":
                    # A producer that claims, writes part of its reply, and vanishes.
                    backend = producers._backend
                    record = await backend.claim(
                        session_id, metadata={}, lease_ttl=LEASE, retention=RETENTION
                    )
                    stored = [
                        StoredEvent(seq, "message", DataKind.JSON, str(seq - 1))
                        for seq in range(1, rng.randint(1, EVENTS) + 1)
                    ]
                    await backend.append(session_id, record.generation, stored, metadata=None)
                    for _ in range(2):
                        tg.start_soon(subscribe, session_id, plan, rng.uniform(0, 0.05))
                    return
                try:
                    async with producers.produce(session_id) as stream:
                        for _ in range(2):
                            tg.start_soon(
                                subscribe, session_id, plan, rng.uniform(0, pace * EVENTS)
                            )
                        # A reply to be cancelled goes on until the cancel lands.
                        for i in itertools.count() if plan == "cancelled" else range(EVENTS):
                            await stream.send(i)
                            await anyio.sleep(pace)
                            if plan == "failed" and i == EVENTS // 2:
                                raise Boom("half way")
                            if plan == "cancelled" and i == EVENTS // 3:
                                tg.start_soon(readers.cancel, session_id)
                except Boom:
                    pass

        async with anyio.create_task_group() as tg:
            for index, plan in enumerate(plans):
                tg.start_soon(produce, index, plan)
        elapsed = time.monotonic() - started
        connections_in_use = client_count(fresh_redis)
    tasks_after = len(anyio.get_running_tasks())
    with anyio.fail_after(5):
        # The server notices closed sockets a moment later; nothing to wait on.
        while client_count(fresh_redis) != connections_before:  # noqa: ASYNC110
            await anyio.sleep(0.05)

    expected = {"done": State.DONE, "failed": State.FAILED, "cancelled": State.CANCELLED,
                "crashed": State.ABANDONED}  # fmt: skip
    counts: dict[str, int] = {}
    for plan, state, data in results:
        assert state is expected[plan], (plan, state)
        assert data == list(range(len(data))), plan  # in order, no gap, no duplicate
        if plan == "done":
            assert len(data) == EVENTS
        counts[plan] = counts.get(plan, 0) + 1
    assert len(results) == 2 * SESSIONS
    assert tasks_after == tasks_before, [task.name for task in anyio.get_running_tasks()]
    # Every key expires: a finished session's RETENTION after its end, a
    # crashed one's LEASE + RETENTION after its claim. Nothing writes once
    # the hubs are closed, so a key with such a time to live is gone by then
    # (Redis's own promise, not waited for here).
    keys = int(fresh_redis.command("DBSIZE").strip())
    without_expiry = fresh_redis.command(
        "EVAL",
        "local bad = {} for _, key in ipairs(redis.call('KEYS', '*')) do "
        "local ttl = redis.call('PTTL', key) "
        "if ttl < 0 or ttl > tonumber(ARGV[1]) then bad[#bad + 1] = key .. ' ' .. ttl end "
        "end return bad",
        "0",
        str(int((LEASE + RETENTION) * 1000)),
    )
    print(
        f"\nsoak ({anyio_backend}): {SESSIONS} sessions x {EVENTS} events, {len(results)} "
        f"subscriptions in {elapsed:.1f}s; outcomes {counts}; lost 0; "
        f"{connections_in_use} connections for 2 hubs; {keys} keys, each expiring"
    )
    assert keys > 0
    assert without_expiry.strip() == b"", without_expiry


# It keeps time (leases, retention) while it loads both cores: run alone.
pytestmark = [pytest.mark.slow, pytest.mark.serial]
