"""The SSE responses at the ASGI level, driven by hand: one subscription per
request, opened when the response starts and closed as soon as the client
disconnects, even while the stream is idle."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

from replayhub import Hub, LeaseLostError, Producer
from replayhub.aisdk import UIMessageStreamResponse
from replayhub.asgi import EventStreamResponse, SubscriptionResponse
from replayhub.sse import END_EVENT, ERROR_EVENT

from .sse_client import Message, parse

SCOPE = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"}}


class CountingHub(Hub):
    """A hub that counts the subscriptions its responses open and hold."""

    opened = 0
    held = 0

    def subscribe(self, *args: Any, **kwargs: Any) -> Any:
        subscription = super().subscribe(*args, **kwargs)

        @asynccontextmanager
        async def counted() -> AsyncIterator[Any]:
            async with subscription as events:
                self.opened += 1
                self.held += 1
                try:
                    yield events
                finally:
                    self.held -= 1

        return counted()


class Client:
    """The server side of one request: what the response sent, and a
    disconnect to hand it when the test says so."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.body = b""
        self.disconnected = anyio.Event()
        self.got_body = anyio.Event()

    async def receive(self) -> dict[str, Any]:
        await self.disconnected.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        self.messages.append(message)
        if message["type"] == "http.response.body":
            self.body += message["body"]
            if message["body"]:
                self.got_body.set()

    @property
    def status(self) -> int:
        return int(self.messages[0]["status"])

    def events(self) -> list[Message]:
        return parse(self.body.decode().split("\n"))


async def respond(response: SubscriptionResponse, client: Client) -> None:
    await response(SCOPE, client.receive, client.send)  # type: ignore[arg-type]


async def test_a_finished_session_is_served_with_one_subscription() -> None:
    hub = CountingHub()
    async with hub:
        async with hub.produce("s") as stream:
            await stream.send("a")
            await stream.send("b")
        client = Client()
        with anyio.fail_after(5):
            await respond(EventStreamResponse(hub, "s"), client)
    assert client.status == 200
    events = client.events()
    assert [(event.event, event.data) for event in events[:2]] == [
        ("message", "a"),
        ("message", "b"),
    ]
    assert events[2].event == END_EVENT
    assert json.loads(events[2].data) == {
        "state": "done",
        "error": None,
        "error_type": None,
        "metadata": {},
    }
    assert len(events) == 3
    assert client.messages[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
    assert (hub.opened, hub.held) == (1, 0)


@pytest.mark.parametrize("response_class", [EventStreamResponse, UIMessageStreamResponse])
async def test_a_client_leaving_an_idle_stream_closes_its_subscription_at_once(
    response_class: type[EventStreamResponse] | type[UIMessageStreamResponse],
) -> None:
    hub = CountingHub()
    async with hub, hub.produce("s") as stream:
        await stream.send("a")
        client = Client()
        async with anyio.create_task_group() as tg:
            tg.start_soon(respond, response_class(hub, "s", ping_interval=3600), client)
            with anyio.fail_after(5):
                await client.got_body.wait()
            assert hub.held == 1
            client.disconnected.set()
            with anyio.fail_after(5):  # not the hour until the next ping
                while hub.held:  # noqa: ASYNC110 - the response's exit is what is waited for
                    await anyio.sleep(0.01)
        assert not stream.cancel_requested  # the producer goes on
        await stream.send("b")
    assert hub.opened == 1


async def test_unknown_sessions_and_bad_cursors_are_refused_before_streaming() -> None:
    hub = CountingHub()
    async with hub:
        async with hub.produce("s") as stream:
            await stream.send("a")
        for response, status in [
            (EventStreamResponse(hub, "nobody"), 404),
            (EventStreamResponse(hub, "s", after="garbage"), 400),
            (EventStreamResponse(hub, "s", after=f"{stream.generation}-9"), 400),
        ]:
            client = Client()
            await respond(response, client)
            assert client.status == status
            assert "error" in json.loads(client.body)
    assert (hub.opened, hub.held) == (0, 0)


async def test_a_session_removed_while_streamed_ends_with_an_error_event() -> None:
    hub = CountingHub()
    async with hub:
        client = Client()
        async with anyio.create_task_group() as tg:
            with pytest.raises(LeaseLostError):
                async with hub.produce("s") as stream:
                    await stream.send("a")
                    tg.start_soon(respond, EventStreamResponse(hub, "s"), client)
                    with anyio.fail_after(5):
                        await client.got_body.wait()
                    await hub.remove("s")
                    await anyio.sleep_forever()  # the lost claim cancels the block
    assert client.status == 200
    last = client.events()[-1]
    assert last.event == ERROR_EVENT
    assert "removed" in last.data
    assert client.messages[-1]["more_body"] is False
    assert hub.held == 0


class SlowClient(Client):
    """A client whose every write takes a while (a slow network), and that
    records whether two writes ever overlapped."""

    def __init__(self) -> None:
        super().__init__()
        self.sending = False
        self.overlapped = False

    async def send(self, message: dict[str, Any]) -> None:
        if self.sending:
            self.overlapped = True
        self.sending = True
        try:
            await anyio.sleep(0.005)
            await super().send(message)
        finally:
            self.sending = False


PING = b":ping\n\n"


@asynccontextmanager
async def streaming(
    hub: Hub, response: SubscriptionResponse, client: Client
) -> AsyncIterator[Producer]:
    """A session with one event stored, streamed to ``client`` by
    ``response``, with its producer for the block."""
    async with anyio.create_task_group() as tg, hub.produce("s") as stream:
        await stream.send("a")
        await stream.flush()
        tg.start_soon(respond, response, client)
        yield stream


@pytest.mark.parametrize("response_class", [EventStreamResponse, UIMessageStreamResponse])
async def test_an_idle_stream_is_pinged_and_its_writes_never_overlap(
    response_class: type[EventStreamResponse] | type[UIMessageStreamResponse],
) -> None:
    hub = CountingHub()
    client = SlowClient()
    async with hub:
        async with streaming(hub, response_class(hub, "s", ping_interval=0.02), client) as stream:
            with anyio.fail_after(5):
                while client.body.count(PING) < 3:  # noqa: ASYNC110 - nothing else tells
                    await anyio.sleep(0.01)
            # Events come while pings are due and being written: gaps of 0
            # to 35 ms, around the 20 ms interval, each write taking 5 ms.
            for index in range(40):
                await stream.send(f"e{index}")
                await anyio.sleep(0.005 * (index % 8))
        with anyio.fail_after(5):
            while hub.held:  # noqa: ASYNC110 - the response's exit is what is waited for
                await anyio.sleep(0.01)
    assert not client.overlapped
    assert client.messages[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
    # Every ping is a whole comment between whole events.
    assert PING in client.body
    text = client.body.replace(PING, b"").decode()
    if response_class is EventStreamResponse:
        data = [event.data for event in parse(text.split("\n")) if event.event == "message"]
        assert data == ["a", *[f"e{index}" for index in range(40)]]
    else:
        chunks = [event.data for event in parse(text.split("\n"))]
        assert chunks[-1] == "[DONE]"
        parts = [json.loads(chunk) for chunk in chunks[:-1]]
        data = [part["data"] for part in parts if part["type"] == "data-message"]
        assert data == ["a", *[f"e{index}" for index in range(40)]]


async def test_a_stream_that_keeps_writing_is_not_pinged() -> None:
    hub = CountingHub()
    client = Client()
    async with hub:
        async with streaming(
            hub, EventStreamResponse(hub, "s", ping_interval=0.5), client
        ) as stream:
            for index in range(30):  # a write every 10 ms, far within the interval
                await stream.send(f"e{index}")
                await anyio.sleep(0.01)
    assert PING not in client.body
    assert len(client.events()) == 32  # a, e0-e29 and the end


class GoneClient(Client):
    """A client whose connection breaks after the first body: every later
    write raises ``OSError``, as ASGI 2.4 servers do, and no disconnect
    message ever comes."""

    async def send(self, message: dict[str, Any]) -> None:
        if self.got_body.is_set():
            raise OSError("connection lost")
        await super().send(message)


async def test_a_ping_that_finds_the_client_gone_ends_an_idle_stream() -> None:
    hub = CountingHub()
    client = GoneClient()
    async with hub, hub.produce("s") as stream:
        await stream.send("a")
        await stream.flush()
        with anyio.fail_after(5):  # the session stays live and idle throughout
            await respond(EventStreamResponse(hub, "s", ping_interval=0.02), client)
        assert hub.held == 0
        assert not stream.cancel_requested  # the producer goes on
