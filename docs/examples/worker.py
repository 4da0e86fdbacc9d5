"""Producers in a worker process, apart from the web tier (docs/guides/worker.md).

The web tier pushes a job on a Redis list and answers with the session id;
a worker takes jobs and produces each session; any web instance serves the
session's events and stops it. Run workers with ``python worker.py``.
"""

from __future__ import annotations

import json
import os
import uuid
from functools import partial
from typing import Any

import anyio

import replayhub

REDIS_URL = os.environ.get("REPLAYHUB_URL", "redis://127.0.0.1:6379/0")
JOBS = "chat:jobs"


# --8<-- [start:web]
async def request_reply(redis: Any, prompt: str) -> str:
    """Web tier: queue the job, return the session id to subscribe to."""
    session_id = f"chat-{uuid.uuid4().hex}"
    await redis.rpush(JOBS, [json.dumps({"session_id": session_id, "prompt": prompt})])
    return session_id


async def wait_until_started(hub: replayhub.Hub, session_id: str, *, within: float = 10) -> None:
    """Web tier: a session exists once a worker claimed it; until then a
    subscription would raise SessionNotFoundError."""
    with anyio.fail_after(within):
        while await hub.info(session_id) is None:  # noqa: ASYNC110 - another process's state
            await anyio.sleep(0.05)


# --8<-- [end:web]


# --8<-- [start:worker]
async def reply(stream: replayhub.Producer, prompt: str) -> None:
    for word in f"You said {prompt!r}; here is the reply.".split():
        await anyio.sleep(0.01)  # the model's stream, in a real worker
        await stream.send(word + " ", event="text-delta")


async def work(hub: replayhub.Hub, redis: Any) -> None:
    """Worker: run every job as a producer, until cancelled (then the
    replies still running end ``cancelled``)."""
    async with replayhub.ProducerGroup(hub) as producers:
        while True:
            # LPOP, not BLPOP: a blocking command cancelled at shutdown costs
            # coredis a pool slot.
            job = await redis.lpop(JOBS)
            if job is None:
                await anyio.sleep(0.05)
                continue
            request = json.loads(job)
            await producers.start(
                request["session_id"],
                partial(reply, prompt=request["prompt"]),
                metadata={"prompt": request["prompt"]},
            )


async def main() -> None:
    import coredis

    async with (
        replayhub.Hub.from_url(REDIS_URL, namespace="chat") as hub,
        coredis.Redis.from_url(REDIS_URL) as redis,
    ):
        await work(hub, redis)


if __name__ == "__main__":
    anyio.run(main)
# --8<-- [end:worker]
