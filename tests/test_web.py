"""The demo app over real HTTP: uvicorn on asyncio, Hypercorn's trio worker on
trio, httpx as the client. A client that disconnects and resumes with
Last-Event-ID gets exactly the rest, and its leaving never stops the reply."""

from __future__ import annotations

import json
from collections.abc import Iterator

import anyio
import httpx
import pytest

from replayhub.demo.fake_llm import reasoning_for, reply_to
from replayhub.sse import END_EVENT

from .demo_server import PACE, WORDS, DemoServer
from .redis_server import RedisServer
from .sse_client import Message, Parser


@pytest.fixture
def server(anyio_backend: str) -> Iterator[DemoServer]:
    # The server's loop follows the test's: uvicorn/asyncio or Hypercorn/trio.
    with DemoServer(anyio_backend) as running:
        yield running


async def start_chat(client: httpx.AsyncClient, prompt: str) -> str:
    response = await client.post("/api/chats", json={"prompt": prompt})
    response.raise_for_status()
    session_id: str = response.json()["session_id"]
    return session_id


async def read_events(
    client: httpx.AsyncClient,
    session_id: str,
    *,
    headers: dict[str, str] | None = None,
    stop_after: int | None = None,
) -> list[Message]:
    messages: list[Message] = []
    async with client.stream("GET", f"/api/chats/{session_id}/events", headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        parser = Parser()
        async for line in response.aiter_lines():
            message = parser.feed(line)
            if message is None:
                continue
            messages.append(message)
            if message.event == END_EVENT or len(messages) == stop_after:
                break
    return messages


async def test_disconnect_then_resume_with_last_event_id(server: DemoServer) -> None:
    prompt = "resume me"
    async with httpx.AsyncClient(base_url=server.base, timeout=10) as client:
        session_id = await start_chat(client, prompt)
        first = await read_events(client, session_id, stop_after=7)  # then the client drops
        await anyio.sleep(PACE * 10)  # the reply goes on meanwhile
        rest = await read_events(client, session_id, headers={"Last-Event-ID": first[-1].id or ""})
    assert rest[-1].event == END_EVENT
    assert json.loads(rest[-1].data)["state"] == "done"  # leaving never cancelled it
    received = first + rest[:-1]
    ids = [message.id for message in received]
    assert len(ids) == len(set(ids))  # no duplicate
    # The fake model's typed events: reasoning apart from the text, then usage.
    assert text_of(received, "reasoning-delta") == reasoning_for(prompt)
    assert text_of(received, "text-delta") == reply_to(prompt, words=WORDS)  # no gap
    usage = [json.loads(message.data) for message in received if message.event == "usage"]
    assert usage[0]["output_tokens"] > usage[0]["reasoning_tokens"] > 0


def text_of(messages: list[Message], event: str) -> str:
    return "".join(message.data for message in messages if message.event == event)


async def test_stop_from_the_api_cancels_the_reply(server: DemoServer) -> None:
    async with httpx.AsyncClient(base_url=server.base, timeout=10) as client:
        session_id = await start_chat(client, "stop me")
        await read_events(client, session_id, stop_after=3)
        cancelled = await client.post(f"/api/chats/{session_id}/cancel")
        assert cancelled.json()["state"] == "cancelled"
        messages = await read_events(client, session_id)
        assert json.loads(messages[-1].data)["state"] == "cancelled"
        events_then = (await client.get(f"/api/chats/{session_id}")).json()["events"]
        await anyio.sleep(PACE * 10)
        assert (await client.get(f"/api/chats/{session_id}")).json()["events"] == events_then
        assert len(messages) - 1 < WORDS  # generation stopped early


async def test_bad_requests_get_status_codes(server: DemoServer) -> None:
    async with httpx.AsyncClient(base_url=server.base, timeout=10) as client:
        assert (await client.get("/api/chats/nobody/events")).status_code == 404
        session_id = await start_chat(client, "x")
        bad = await client.get(
            f"/api/chats/{session_id}/events", headers={"Last-Event-ID": "garbage"}
        )
        assert bad.status_code == 400
        beyond = await client.get(f"/api/chats/{session_id}/events?after=999999999999999-1")
        assert beyond.status_code == 400


async def test_two_instances_on_redis_share_sessions_and_stop(
    anyio_backend: str, redis_server: RedisServer
) -> None:
    with (
        DemoServer(anyio_backend, redis_server.url) as one,
        DemoServer(anyio_backend, redis_server.url) as two,
    ):
        async with (
            httpx.AsyncClient(base_url=one.base, timeout=10) as first,
            httpx.AsyncClient(base_url=two.base, timeout=10) as second,
        ):
            session_id = await start_chat(first, "shared")
            seen = await read_events(second, session_id, stop_after=3)
            assert len(seen) == 3
            stopped = await second.post(f"/api/chats/{session_id}/cancel")
            assert stopped.json()["state"] == "cancelled"
            ended = await read_events(first, session_id)
            assert json.loads(ended[-1].data)["state"] == "cancelled"
