"""A TCP proxy on loopback that delays every chunk by a fixed time each way,
so a hub can be measured as if Redis were twice ``delay`` of round trip away.

Each direction of a connection is a pipe whose chunks are released
``delay`` seconds after they arrived, in order; throughput is not limited.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable

import anyio
from anyio.abc import ByteReceiveStream, ByteSendStream, SocketStream, TaskStatus


async def _pipe(source: ByteReceiveStream, sink: ByteSendStream, delay: float) -> None:
    send, receive = anyio.create_memory_object_stream[tuple[float, bytes]](math.inf)

    async def release() -> None:
        async with receive:
            async for due, chunk in receive:
                await anyio.sleep_until(due)
                await sink.send(chunk)
        await sink.aclose()

    async with anyio.create_task_group() as task_group:
        task_group.start_soon(release)
        async with send:
            try:
                async for chunk in source:
                    send.send_nowait((anyio.current_time() + delay, chunk))
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                pass


def _handler(port: int, delay: float) -> Callable[[SocketStream], Awaitable[None]]:
    async def handle(client: SocketStream) -> None:
        async with client, await anyio.connect_tcp("127.0.0.1", port) as server:
            try:
                async with anyio.create_task_group() as task_group:
                    task_group.start_soon(_pipe, client, server, delay)
                    task_group.start_soon(_pipe, server, client, delay)
            except* (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                pass

    return handle


async def serve_delay_proxy(
    target_port: int, delay: float, *, task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED
) -> None:
    """Listen on a free loopback port (given to ``task_status``) and forward
    to ``target_port``, ``delay`` seconds late each way."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    async with listener:
        task_status.started(listener.extra(anyio.abc.SocketAttribute.local_port))
        await listener.serve(_handler(target_port, delay))
