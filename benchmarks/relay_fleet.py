"""Many replies relayed from a model SDK at once: the real OpenAI SDK's
stream through ``llm.relay``, S sessions in one process, each reply paced at
50 chunks/s, one reader per session.

    python benchmarks/relay_fleet.py                        # the SDK alone, memory, Redis
    python benchmarks/relay_fleet.py --kinds redis-py --repeat 5
    python benchmarks/relay_fleet.py --build old=/path/to/old/src --build new=src

``fleet.py`` sends with ``stream.send`` and measures the library alone; here
each token also goes through the SDK (an ``httpx2.MockTransport`` answers
with a Chat Completions body whose chunks come at the pace of a model, one
per 20 ms), which is what an application relaying a model costs; kind
``sdk`` reads the same replies with no hub (the floor: what the SDK itself
costs). Each run
is a fresh child process; its CPU (user + system) is taken over the middle
of the replies, per token relayed. Builds take turns, so a drifting machine
weighs on each alike; the run of median CPU is shown.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import httpx2
import openai
from anyio.abc import TaskStatus
from redis_throughput import emit, median_try, redis_server

from replayhub import Hub, llm

HERE = Path(__file__).resolve().parent
#: Seconds from the last claim to the first chunk of every reply.
LEAD_IN = 1.0
#: Seconds left out of the CPU window at each end (start-up, wind-down).
MARGIN = 0.5


def chunk(content: str | None, finish: str | None = None) -> bytes:
    delta = {} if content is None else {"content": content}
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    body = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [choice]}  # fmt: skip
    return f"data: {json.dumps(body)}\n\n".encode()


class Pace:
    """The common start of every reply, set once every session is claimed."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.start = 0.0
        self.go = anyio.Event()


class PacedReply(httpx2.AsyncByteStream):
    """A Chat Completions SSE body, one chunk every ``1 / rate`` s from the start."""

    def __init__(self, pieces: list[bytes], pace: Pace) -> None:
        self._pieces, self._pace = pieces, pace

    async def __aiter__(self) -> Any:
        pace = self._pace
        await pace.go.wait()
        for index, piece in enumerate(self._pieces):
            await anyio.sleep_until(pace.start + index / pace.rate)
            yield piece

    async def aclose(self) -> None:
        pass


async def relay_all(args: argparse.Namespace) -> dict[str, Any]:
    pieces = [chunk("")] + [chunk(f" token{index}") for index in range(args.tokens)]
    pieces += [chunk(None, "stop"), b"data: [DONE]\n\n"]
    pace = Pace(args.rate)

    def answer(request: httpx2.Request) -> httpx2.Response:
        body = PacedReply(pieces, pace)
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, stream=body)

    client = openai.AsyncOpenAI(
        api_key="sk-bench", base_url="http://provider.test/v1", max_retries=0,
        http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(answer)),
    )  # fmt: skip

    async def create() -> Any:
        return await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}], stream=True
        )

    async def window() -> tuple[float, float]:
        """CPU seconds and seconds over the middle of the replies."""
        start = pace.start = anyio.current_time() + LEAD_IN
        pace.go.set()
        await anyio.sleep_until(start + MARGIN)
        before, clock = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
        await anyio.sleep_until(start + args.tokens / args.rate - MARGIN)
        after, elapsed = resource.getrusage(resource.RUSAGE_SELF), time.monotonic() - clock
        return (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime), elapsed

    names = [f"r{index}" for index in range(args.sessions)]
    if args.kind == "sdk":  # the SDK alone, read and dropped: the floor
        async with anyio.create_task_group() as tasks:
            for _ in names:
                tasks.start_soon(drain, await create())
            cpu, elapsed = await window()
        return figures(args, cpu, elapsed, complete=args.sessions)

    hub = Hub.from_url(args.url, namespace=f"r{os.getpid()}") if args.url else Hub()
    received: dict[str, int] = {}

    async def produce(name: str, *, task_status: TaskStatus[None]) -> None:
        async with hub.produce(name) as stream:
            task_status.started()
            await llm.relay(stream, await create())

    async def read(name: str) -> None:
        async with hub.subscribe(name) as events:
            received[name] = sum([1 async for _ in events])

    async with hub:
        async with anyio.create_task_group() as tasks:
            for name in names:
                await tasks.start(produce, name)
                tasks.start_soon(read, name)
            cpu, elapsed = await window()
        # Every reader got every event its session stored.
        stored = [await hub.info(name) for name in names]
        complete = sum(
            info is not None and received.get(name) == info.events
            for name, info in zip(names, stored, strict=True)
        )
    return figures(args, cpu, elapsed, complete=complete)


async def drain(reply: Any) -> None:
    async for _ in reply:
        pass


def figures(
    args: argparse.Namespace, cpu: float, elapsed: float, *, complete: int
) -> dict[str, Any]:
    tokens = args.sessions * args.rate * elapsed
    return {
        "cpu_percent": round(100 * cpu / elapsed, 1),
        "cpu_us_per_token": round(1e6 * cpu / tokens, 1),
        "readers_complete": complete,
    }


def child(args: argparse.Namespace) -> None:
    figures = anyio.run(relay_all, args, backend=args.loop)
    emit(figure="relay_fleet", kind=args.kind, loop=args.loop, sessions=args.sessions, **figures)


def parent(args: argparse.Namespace) -> None:
    builds = [tuple(build.split("=", 1)) for build in args.build] or [("", "")]
    rows: list[dict[str, Any]] = []
    with redis_server() as server:
        urls = {
            "sdk": "",
            "memory": "",
            "redis": f"{server}?driver=coredis",
            "redis-py": f"{server}?driver=redis-py",
        }
        for kind in args.kinds.split(","):
            for loop in ("asyncio", "trio") if kind == "redis" and args.trio else ("asyncio",):
                tries: dict[str, list[dict[str, Any]]] = {label: [] for label, _ in builds}
                for _ in range(args.repeat):
                    for label, src in builds:
                        command = [
                            sys.executable, str(Path(__file__)), "--child", "--kind", kind,
                            "--loop", loop, "--url", urls[kind], "--sessions", str(args.sessions),
                            "--tokens", str(args.tokens), "--rate", str(args.rate),
                        ]  # fmt: skip
                        env = {**os.environ, "PYTHONPATH": src} if src else None
                        done = subprocess.run(
                            command, capture_output=True, text=True, cwd=HERE, env=env, check=False
                        )
                        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
                        if done.returncode or not lines:
                            sys.exit(f"{kind} {loop} {label}: {done.stderr[-2000:]}")
                        row = json.loads(lines[-1])
                        if row["readers_complete"] != args.sessions:
                            sys.exit(f"{kind} {loop} {label}: a reader missed events: {row}")
                        tries[label].append(row)
                for label, _ in builds:
                    row = {**median_try(tries[label], "cpu_us_per_token"), "build": label}
                    print(json.dumps(row), flush=True)
                    rows.append(row)
    print()
    print(
        "| build | kind | loop | sessions | CPU % | CPU µs/token (median) | beyond the SDK | runs |"
    )
    print("|---|---|---|---|---|---|---|---|")
    floors = {row["build"]: row["cpu_us_per_token"] for row in rows if row["kind"] == "sdk"}
    for row in rows:
        listed = ", ".join(f"{value:.1f}" for value in row["runs_cpu_us_per_token"])
        floor = floors.get(row["build"])
        beyond = (
            "—"
            if floor is None or row["kind"] == "sdk"
            else f"{row['cpu_us_per_token'] - floor:.1f}"
        )
        print(
            f"| {row['build'] or 'this'} | {row['kind']} | {row['loop']} | {row['sessions']} "
            f"| {row['cpu_percent']} | {row['cpu_us_per_token']} | {beyond} | {listed} |"
        )


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", default="sdk,memory,redis,redis-py")
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--tokens", type=int, default=300, help="chunks per reply")
    parser.add_argument("--rate", type=float, default=50.0, help="chunks per second per reply")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--trio", action="store_true", help="also coredis on Trio")
    parser.add_argument("--build", action="append", default=[], metavar="LABEL=SRC")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--kind", help=argparse.SUPPRESS)
    parser.add_argument("--loop", default="asyncio", help=argparse.SUPPRESS)
    parser.add_argument("--url", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    (child if args.child else parent)(args)


if __name__ == "__main__":
    cli()
