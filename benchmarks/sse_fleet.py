"""Many chats served to browsers as Server-Sent Events: S sessions produced in
one server process at 50 events/s each, every one read by two SSE clients in
another process, through a real ASGI server (uvicorn on asyncio, Hypercorn on
Trio) and replayhub's ``event_stream_response``.

    python benchmarks/sse_fleet.py                                  # 100 sessions, both loops
    python benchmarks/sse_fleet.py --sessions 100,200 --loops asyncio --repeat 3
    python benchmarks/sse_fleet.py --build old=/path/to/old/src --build new=src

``fleet.py`` reads with subscriptions in the producing process; this is the
path most deployments take, where each reader is an HTTP response: the
figure is the server's CPU per produced event (two SSE deliveries each),
over the middle of the run, and the send-to-receive latency the clients see
(both processes read the same system-wide monotonic clock). The clients are
plain asyncio protocols that only find the ``data:`` lines, so that they
keep up on the other core. Builds take turns; the run of median CPU is shown.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import time
from array import array
from pathlib import Path
from typing import Any, cast

import anyio
from anyio.abc import TaskStatus
from redis_throughput import emit, median_try, redis_server
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from replayhub import Hub, llm
from replayhub.aisdk import ui_message_stream_response
from replayhub.asgi import event_stream_response

HERE = Path(__file__).resolve().parent
#: Seconds from the go to the first event of every session.
LEAD_IN = 1.0
#: Seconds left out of the CPU window at each end (start-up, wind-down).
MARGIN = 0.5
END_LINE = b"event: replayhub.end"
UI_DELTA = b'data: {"type":"text-delta"'
UI_DONE = b"data: [DONE]"


# -- the server: producers and the ASGI app in one process ---------------------------------


async def serve(args: argparse.Namespace) -> None:
    names = [f"c{index}" for index in range(args.sessions)]
    hub = Hub.from_url(args.url, namespace=f"sse{os.getpid()}") if args.url else Hub()
    go = anyio.Event()
    start = 0.0

    async def endpoint(request: Request) -> Response:
        if args.response == "ui":
            return await ui_message_stream_response(hub, request.path_params["name"], request)
        return await event_stream_response(hub, request.path_params["name"], request)

    app = Starlette(routes=[Route("/s/{name}", endpoint)])

    async def produce(name: str, *, task_status: TaskStatus[None]) -> None:
        async with hub.produce(name) as stream:
            task_status.started()
            await go.wait()
            for index in range(args.events):
                await anyio.sleep_until(start + index / args.rate)
                now = repr(time.monotonic())
                await stream.send(llm.TextDelta(now) if args.response == "ui" else now)

    async with hub, anyio.create_task_group() as tasks:
        for name in names:
            await tasks.start(produce, name)
        stop = anyio.Event()
        await tasks.start(run_server, app, args, stop)
        print("ready", flush=True)
        await anyio.to_thread.run_sync(sys.stdin.readline)  # every client is connected
        start = anyio.current_time() + LEAD_IN
        go.set()
        await anyio.sleep_until(start + MARGIN)
        before, clock = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
        await anyio.sleep_until(start + args.events / args.rate - MARGIN)
        after, elapsed = resource.getrusage(resource.RUSAGE_SELF), time.monotonic() - clock
        cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        await anyio.to_thread.run_sync(sys.stdin.readline)  # every client has read the end
        stop.set()
    produced = args.sessions * args.rate * elapsed
    emit(
        figure="sse_server",
        cpu_percent=round(100 * cpu / elapsed, 1),
        cpu_us_per_event=round(1e6 * cpu / produced, 1),
    )


async def run_server(
    app: Starlette, args: argparse.Namespace, stop: anyio.Event, *, task_status: TaskStatus[None]
) -> None:
    """uvicorn on asyncio, Hypercorn on Trio, until ``stop`` is set."""
    async with anyio.create_task_group() as tasks:
        if args.loop == "asyncio":
            import uvicorn

            server = uvicorn.Server(
                uvicorn.Config(
                    app, host="127.0.0.1", port=args.port, log_level="warning", lifespan="off"
                )
            )
            tasks.start_soon(server.serve)
            await wait_for_port(args.port)
            task_status.started()
            await stop.wait()
            server.should_exit = True
        else:
            from hypercorn.config import Config
            from hypercorn.trio import serve as hypercorn_serve

            config = Config()
            config.bind = [f"127.0.0.1:{args.port}"]
            config.loglevel = "WARNING"
            tasks.start_soon(
                lambda: hypercorn_serve(cast(Any, app), config, shutdown_trigger=stop.wait)
            )
            await wait_for_port(args.port)
            task_status.started()


async def wait_for_port(port: int) -> None:
    with anyio.fail_after(10):
        while True:
            try:
                connection = await anyio.connect_tcp("127.0.0.1", port)
            except OSError:
                await anyio.sleep(0.01)
            else:
                await connection.aclose()
                return


# -- the clients: plain asyncio protocols ---------------------------------------------------


class SSEReader(asyncio.Protocol):
    """One ``EventSource``-like reader: the latency of every ``data:`` line,
    done at the session's end event."""

    def __init__(self, latencies: array[float], done: asyncio.Future[int]) -> None:
        self._latencies = latencies
        self._done = done
        self._tail = b""
        self._ending = False
        self.events = 0

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        lines = (self._tail + data).split(b"\n")
        self._tail = lines.pop()
        for line in lines:
            if line.startswith(UI_DELTA):  # ..."delta":"<time>"}
                self._latencies.append(now - float(line[line.rindex(b':"') + 2 : -2]))
                self.events += 1
            elif line.startswith(UI_DONE):
                self._done.set_result(self.events)
            elif line.startswith(b"data: {"):
                pass  # another part of the UI message stream
            elif line.startswith(b"data: "):
                if self._ending:
                    continue  # the end event's outcome
                self._latencies.append(now - float(line[6:]))
                self.events += 1
            elif line.startswith(END_LINE):
                self._ending = True
                if not self._done.done():
                    self._done.set_result(self.events)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._done.done():
            self._done.set_result(self.events)


def read_all(args: argparse.Namespace) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        latencies: array[float] = array("d")
        done: list[asyncio.Future[int]] = []
        for index in range(args.sessions):
            for _ in range(args.readers):
                finished: asyncio.Future[int] = loop.create_future()
                transport, _ = await loop.create_connection(
                    lambda finished=finished: SSEReader(latencies, finished),  # type: ignore[misc]
                    "127.0.0.1",
                    args.port,
                )
                transport.write(
                    f"GET /s/c{index} HTTP/1.1\r\nHost: bench\r\n"
                    "Accept: text/event-stream\r\n\r\n".encode()
                )
                done.append(finished)
        print("connected", flush=True)
        counts = await asyncio.gather(*done)
        ordered = sorted(latencies)

        def at(fraction: float) -> float:
            return round(1000 * ordered[min(len(ordered) - 1, int(fraction * len(ordered)))], 2)

        emit(
            figure="sse_clients",
            p50_ms=at(0.5),
            p99_ms=at(0.99),
            max_ms=round(1000 * ordered[-1], 2) if ordered else None,
            delivered=sum(counts),
        )

    asyncio.run(main())


# -- the parent: runs, builds, the table ------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def one_run(
    args: argparse.Namespace, loop: str, sessions: int, url: str, src: str
) -> dict[str, Any]:
    port = free_port()
    common = [
        "--port", str(port), "--sessions", str(sessions), "--rate", str(args.rate),
        "--events", str(args.events), "--readers", str(args.readers), "--response", args.response,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": src} if src else None
    server = subprocess.Popen(
        [sys.executable, str(Path(__file__)), "--serve", "--loop", loop, "--url", url, *common],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=HERE, env=env,
    )  # fmt: skip
    assert server.stdin is not None
    assert server.stdout is not None
    assert server.stdout.readline().strip() == "ready"
    clients = subprocess.Popen(
        [sys.executable, str(Path(__file__)), "--read", *common],
        stdout=subprocess.PIPE, text=True, cwd=HERE,
    )  # fmt: skip
    assert clients.stdout is not None
    assert clients.stdout.readline().strip() == "connected"
    server.stdin.write("go\n")
    server.stdin.flush()
    read = json.loads(clients.stdout.read().strip().splitlines()[-1])
    server.stdin.write("end\n")
    server.stdin.flush()
    served = json.loads(server.stdout.read().strip().splitlines()[-1])
    server.wait()
    clients.wait()
    return {
        "figure": "sse_fleet",
        "loop": loop,
        "sessions": sessions,
        **{key: value for key, value in read.items() if key != "figure"},
        **{key: value for key, value in served.items() if key != "figure"},
        "expected": sessions * args.events * args.readers,
    }


def parent(args: argparse.Namespace) -> None:
    builds = [tuple(build.split("=", 1)) for build in args.build] or [("", "")]
    rows: list[dict[str, Any]] = []
    with redis_server() as server:
        url = f"{server}?driver=coredis" if args.backend == "redis" else ""
        for loop in args.loops.split(","):
            for sessions in (int(value) for value in args.sessions.split(",")):
                tries: dict[str, list[dict[str, Any]]] = {label: [] for label, _ in builds}
                for _ in range(args.repeat):
                    for label, src in builds:
                        row = one_run(args, loop, sessions, url, src)
                        if row["delivered"] != row["expected"]:
                            sys.exit(f"{loop} {sessions} {label}: events missing: {row}")
                        tries[label].append(row)
                for label, _ in builds:
                    row = {**median_try(tries[label], "cpu_us_per_event", "p99_ms"), "build": label}
                    print(json.dumps(row), flush=True)
                    rows.append(row)
    print()
    print(
        f"Backend: {args.backend}, responses: {args.response}. Server CPU per produced event "
        f"({args.readers} SSE readers "
        "each); latency send to receive, as the clients see it."
    )
    print()
    print("| build | loop | sessions | p50 / p99 / max ms | server CPU % | CPU µs/event | runs |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        runs = ", ".join(
            f"{cpu:.1f} ({p99} ms)"
            for cpu, p99 in zip(row["runs_cpu_us_per_event"], row["runs_p99_ms"], strict=True)
        )
        print(
            f"| {row['build'] or 'this'} | {row['loop']} | {row['sessions']} "
            f"| {row['p50_ms']} / {row['p99_ms']} / {row['max_ms']} | {row['cpu_percent']} "
            f"| {row['cpu_us_per_event']} | {runs} |"
        )
    medians = {row["build"]: row["cpu_us_per_event"] for row in rows}
    if len(medians) > 1:
        print()
        print("median CPU µs/event by build:", statistics.median(medians.values()))


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", default="100")
    parser.add_argument("--loops", default="asyncio,trio")
    parser.add_argument("--backend", choices=["memory", "redis"], default="memory")
    parser.add_argument("--events", type=int, default=300, help="events per session")
    parser.add_argument("--rate", type=float, default=50.0, help="events per second per session")
    parser.add_argument("--readers", type=int, default=2, help="SSE readers per session")
    parser.add_argument(
        "--response",
        choices=["sse", "ui"],
        default="sse",
        help="replayhub's SSE events, or the AI SDK's UI message stream of text deltas",
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--build", action="append", default=[], metavar="LABEL=SRC")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--read", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--loop", default="asyncio", help=argparse.SUPPRESS)
    parser.add_argument("--url", default="", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve or args.read:
        args.sessions = int(args.sessions)
    if args.serve:
        anyio.run(serve, args, backend=args.loop)
    elif args.read:
        read_all(args)
    else:
        parent(args)


if __name__ == "__main__":
    cli()
