"""Roles the multi-process tests run in separate OS processes.

``python -m tests.procs ROLE URL NAMESPACE SESSION [options]``; each role
prints JSON lines on stdout, so the test can follow it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import AsyncExitStack

import anyio

from replayhub import Hub, LeaseLostError, SessionBusyError


def emit(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


async def produce(hub: Hub, args: argparse.Namespace) -> int:
    try:
        async with hub.produce(args.session) as stream:
            emit(claimed=stream.generation)
            sent = 0
            while args.count < 0 or sent < args.count:
                event_id = await stream.send(f"{sent}")
                sent += 1
                if sent % args.report_every == 0:
                    await stream.flush()
                    emit(stored=event_id)
                if args.pace:
                    await anyio.sleep(args.pace)
        emit(outcome="done", cancel_requested=stream.cancel_requested, sent=sent)
    except LeaseLostError as exc:
        emit(outcome="lease-lost", error=str(exc))
        return 3
    return 0


async def subscribe(hub: Hub, args: argparse.Namespace) -> int:
    async with hub.subscribe(args.session, after=args.after) as events:
        emit(subscribed=True)
        ids, data = [], []
        async for event in events:
            ids.append(event.id)
            data.append(event.data)
    assert events.outcome is not None
    emit(ids=ids, data=data, outcome=events.outcome.state.value)
    return 0


async def cancel(hub: Hub, args: argparse.Namespace) -> int:
    info = await hub.cancel(args.session, wait=args.wait)
    emit(state=None if info is None else info.state.value)
    return 0


async def race(hub: Hub, args: argparse.Namespace) -> int:
    """Try to claim ``<session>-<round>`` for every round, all processes at
    once; keep every claim won until told (a line on stdin), so no later
    claim can win the same round legitimately."""
    await anyio.sleep_until(anyio.current_time() + max(0.0, args.start_at - time.time()))
    won = []
    async with AsyncExitStack() as held:
        for round_ in range(args.count):
            try:
                await held.enter_async_context(hub.produce(f"{args.session}-{round_}"))
            except SessionBusyError:
                continue
            won.append(round_)
        emit(won=won)
        # Hold every claim until the test has heard from all processes.
        await anyio.to_thread.run_sync(sys.stdin.readline)
    return 0


ROLES = {"produce": produce, "subscribe": subscribe, "cancel": cancel, "race": race}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=sorted(ROLES))
    parser.add_argument("url")
    parser.add_argument("namespace")
    parser.add_argument("session")
    parser.add_argument("--loop", default="asyncio")
    parser.add_argument("--lease-ttl", type=float, default=1.0)
    parser.add_argument("--count", type=int, default=100, help="events to send; -1: forever")
    parser.add_argument("--pace", type=float, default=0.0)
    parser.add_argument("--report-every", type=int, default=10)
    parser.add_argument("--after", default=None)
    parser.add_argument("--wait", type=float, default=None)
    parser.add_argument("--start-at", type=float, default=0.0, help="Unix time to start at")
    args = parser.parse_args()

    async def run() -> int:
        hub = Hub.from_url(args.url, namespace=args.namespace, lease_ttl=args.lease_ttl)
        async with hub:
            return await ROLES[args.role](hub, args)

    return anyio.run(run, backend=args.loop)


if __name__ == "__main__":
    sys.exit(main())
