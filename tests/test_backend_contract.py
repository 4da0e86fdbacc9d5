"""Backend duties checked on the backend itself, on every kind: write
batches are stored whole and once, and read back exactly, at any cursor."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import cast

import anyio
import pytest

from replayhub import (
    ErrorType,
    EventsLostError,
    LeaseLostError,
    Outcome,
    SessionNotFoundError,
    State,
)
from replayhub._events import Cursor, DataKind, Event, StoredEvent
from replayhub.backends import AppendRequest, Backend, ReadsEvents, Renewal, read_events

from .backends import BackendServers
from .conftest import HubFactory
from .helpers import FaultyBackend, collect

SESSION = "contract"

# Runs of several kinds and names, multi-byte text, empty payloads, newlines
# and bytes that are not UTF-8: what packing batches must not mangle.
MIXED: list[tuple[str, DataKind, str | bytes]] = [
    ("message", DataKind.TEXT, "héllo"),
    ("message", DataKind.TEXT, ""),
    ("message", DataKind.TEXT, "line\nbreak 🙂"),
    ("tool", DataKind.JSON, '{"a":[1,"ü"]}'),
    ("tool", DataKind.JSON, "null"),
    ("audio", DataKind.BYTES, b"\x00\xff\n\x80"),
    ("audio", DataKind.BYTES, b""),
    ("ünïcode name", DataKind.TEXT, "x" * 300),
    ("message", DataKind.TEXT, "end"),
]


def stored(first_seq: int, items: list[tuple[str, DataKind, str | bytes]]) -> list[StoredEvent]:
    return [
        StoredEvent(first_seq + index, name, kind, payload)
        for index, (name, kind, payload) in enumerate(items)
    ]


@pytest.fixture
def namespace() -> str:
    return f"t{uuid.uuid4().hex}"


@pytest.fixture
async def backend(
    backend_kind: str, backend_servers: BackendServers, namespace: str
) -> AsyncIterator[Backend]:
    async with backend_servers.backend(backend_kind, namespace=namespace) as opened:
        yield opened


async def test_batches_read_back_exactly_at_every_cursor_and_limit(backend: Backend) -> None:
    record = await backend.claim(SESSION, metadata={}, lease_ttl=30, retention=60)
    generation = record.generation
    sent = stored(1, MIXED[:4]) + stored(5, MIXED[4:5]) + stored(6, MIXED[5:])
    for batch in (sent[:4], sent[4:5], sent[5:]):
        await backend.append(SESSION, generation, batch, metadata=None)
    expected = [(event.seq, event.event, event.kind, event.payload) for event in sent]
    for after in range(len(sent) + 1):
        for limit in (1, 2, 5, 100):
            result = await backend.read(SESSION, after=Cursor(generation, after), limit=limit)
            assert result is not None
            record, events = result
            assert record.last_seq == len(sent)
            got = [(event.seq, event.event, event.kind, event.payload) for event in events]
            assert got == expected[after : after + limit], (after, limit)
            for event in events:
                delivered = event.to_event(generation)
                assert delivered.id == f"{generation}-{event.seq}"
                assert delivered.event == event.event


async def test_a_page_read_as_events_is_the_page_as_a_reader_receives_it(
    backend: Backend,
) -> None:
    """``read_events`` (what a reader of a finished session reads through)
    returns exactly what ``read`` does, built as a reader receives it, at
    every cursor and limit, and decodes JSON afresh for each read."""
    assert hasattr(backend, "read_events")  # both built-in kinds read pages this way
    reader = cast(ReadsEvents, backend)
    first = await backend.claim(SESSION, metadata={}, lease_ttl=30, retention=60)
    await backend.append(SESSION, first.generation, stored(1, MIXED[:2]), metadata=None)
    await backend.finish(
        SESSION, first.generation, state=State.DONE, error=None, error_type=None, retention=60
    )
    record = await backend.claim(SESSION, metadata={}, lease_ttl=30, retention=60)
    generation = record.generation
    sent = stored(1, MIXED[:4]) + stored(5, MIXED[4:5]) + stored(6, MIXED[5:])
    for batch in (sent[:4], sent[4:5], sent[5:]):
        await backend.append(SESSION, generation, batch, metadata=None)
    cursors = [None, Cursor(first.generation, 2), Cursor(generation + 1, 1)]
    cursors += [Cursor(generation, after) for after in range(len(sent) + 1)]
    for after in cursors:
        for limit in (1, 2, 5, 100):
            stored_page = await backend.read(SESSION, after=after, limit=limit)
            built_page = await reader.read_events(SESSION, after=after, limit=limit)
            assert stored_page is not None
            assert built_page is not None
            assert replace(built_page[0], lease_remaining=None) == replace(
                stored_page[0], lease_remaining=None
            )
            expected = [event.to_event(generation) for event in stored_page[1]]
            assert built_page[1] == expected, (after, limit)
    _, events = await reader.read_events(SESSION, after=None, limit=100) or (None, [])
    _, again = await reader.read_events(SESSION, after=None, limit=100) or (None, [])
    assert events[3].data == {"a": [1, "ü"]}
    assert events[3].data is not again[3].data  # no reader shares a mutable value
    assert await reader.read_events("absent", after=None, limit=1) is None
    with pytest.raises(ValueError, match="at least 1"):
        await reader.read_events(SESSION, after=None, limit=0)


async def test_a_finished_session_reads_back_exactly_page_after_page(backend: Backend) -> None:
    """A reader of a finished session reads it a page at a time, each page
    from the last one's end (on Redis, every page after the first without
    the read script): the same record every time, every event once."""
    record = await backend.claim(SESSION, metadata={"k": 1}, lease_ttl=30, retention=60)
    generation = record.generation
    sent = stored(1, MIXED) + stored(10, MIXED[:1]) + stored(11, MIXED * 2)
    for batch in (sent[:9], sent[9:10], sent[10:]):
        await backend.append(SESSION, generation, batch, metadata=None)
    await backend.finish(
        SESSION, generation, state=State.FAILED, error="boom", error_type=None, retention=60
    )
    reader = cast(ReadsEvents, backend)
    expected = [event.to_event(generation) for event in sent]
    for limit in (1, 2, 4, 9, 10, 11, 100):
        got: list[Event] = []
        after = None
        while len(got) < len(sent):
            found = await reader.read_events(SESSION, after=after, limit=limit)
            assert found is not None
            page_record, events = found
            assert page_record.state is State.FAILED
            assert (page_record.generation, page_record.last_seq) == (generation, len(sent))
            assert (page_record.error, page_record.metadata) == ("boom", {"k": 1})
            assert events, (limit, len(got))
            got += events
            after = Cursor(generation, len(got))
        assert got == expected, limit
        found = await reader.read_events(SESSION, after=after, limit=limit)
        assert found is not None
        assert found[1] == []


async def test_a_reply_stored_an_event_per_write_reads_back_exactly_once_ended(
    backend: Backend, backend_servers: BackendServers, backend_kind: str, namespace: str
) -> None:
    """A model's reply, each token its own write, ended: read at once (on
    Redis, while its log may be being rewritten in large entries) and, on
    shared storage, again from a backend that never read it (by then
    rewritten): the same events at every cursor."""
    record = await backend.claim(SESSION, metadata={}, lease_ttl=30, retention=60)
    generation = record.generation
    sent = stored(1, MIXED * 30)  # 270 writes
    for event in sent:
        await backend.append(SESSION, generation, [event], metadata=None)
    await backend.finish(
        SESSION, generation, state=State.DONE, error=None, error_type=None, retention=60
    )
    expected = [event.to_event(generation) for event in sent]

    async def check(reader: Backend) -> None:
        for after in (0, 1, 9, 100, 269):
            found = await read_events(reader, SESSION, after=Cursor(generation, after), limit=128)
            assert found is not None
            assert found[1] == expected[after : after + 128], after

    await check(backend)
    if backend_kind == "memory":
        return  # a memory backend's sessions are its own
    async with backend_servers.backend(backend_kind, namespace=namespace) as fresh:
        await anyio.sleep(0.1)  # the rewrite has most likely run: exact either way
        await check(fresh)


async def test_a_backend_without_page_reads_is_read_through_read(backend: Backend) -> None:
    """The core's fallback for a backend that has only ``read``."""
    record = await backend.claim(SESSION, metadata={}, lease_ttl=30, retention=60)
    await backend.append(SESSION, record.generation, stored(1, MIXED), metadata=None)
    only_read = FaultyBackend(backend)
    assert not hasattr(only_read, "read_events")
    for after in (None, Cursor(record.generation, 3)):
        built = await read_events(only_read, SESSION, after=after, limit=4)
        direct = await cast(ReadsEvents, backend).read_events(SESSION, after=after, limit=4)
        assert built is not None
        assert direct is not None
        assert built[1] == direct[1]
        assert built[0].last_seq == direct[0].last_seq == len(MIXED)
    assert only_read.reads == 2
    assert await read_events(only_read, "absent", after=None, limit=1) is None


async def test_a_retried_batch_is_stored_once_and_a_bad_one_changes_nothing(
    backend: Backend,
) -> None:
    record = await backend.claim(SESSION, metadata={}, lease_ttl=30, retention=60)
    generation = record.generation
    first, second = stored(1, MIXED[:2]), stored(3, MIXED[2:5])
    await backend.append(SESSION, generation, first, metadata=None)
    await backend.append(SESSION, generation, second, metadata=None)
    await backend.append(SESSION, generation, second, metadata=None)  # a retry
    await backend.append(SESSION, generation, first, metadata=None)  # an older retry
    with pytest.raises(RuntimeError, match="overlap"):
        await backend.append(SESSION, generation, stored(5, MIXED[4:6]), metadata={"x": 1})
    with pytest.raises(EventsLostError, match="event 6 is gone, though stored before"):
        await backend.append(SESSION, generation, stored(7, MIXED[6:7]), metadata={"x": 1})
    result = await backend.read(SESSION, after=None, limit=100)
    assert result is not None
    record, events = result
    assert record.last_seq == 5
    assert record.metadata == {}
    assert [(event.seq, event.payload) for event in events] == [
        (seq, payload) for seq, (_, _, payload) in enumerate(MIXED[:5], start=1)
    ]


async def test_a_failure_category_is_stored_and_kept_as_the_previous_outcome(
    backend: Backend,
) -> None:
    record = await backend.claim(SESSION, metadata={"k": 1}, lease_ttl=30, retention=60)
    await backend.finish(
        SESSION,
        record.generation,
        state=State.FAILED,
        error="RateLimitError: slow down",
        error_type=ErrorType.RATE_LIMIT,
        retention=60,
    )
    result = await backend.head(SESSION)
    assert result is not None
    assert result.info().error_type is ErrorType.RATE_LIMIT
    assert result.info().outcome == Outcome(
        State.FAILED, "RateLimitError: slow down", {"k": 1}, ErrorType.RATE_LIMIT
    )
    again = await backend.claim(SESSION, metadata={}, lease_ttl=30, retention=60)
    assert again.error_type is None
    assert again.previous == (
        record.generation,
        Outcome(State.FAILED, "RateLimitError: slow down", {"k": 1}, ErrorType.RATE_LIMIT),
    )
    await backend.finish(
        SESSION, again.generation, state=State.DONE, error=None, error_type=None, retention=60
    )
    result = await backend.head(SESSION)
    assert result is not None
    assert result.error_type is None


async def test_changing_what_a_read_returned_does_not_change_the_session(
    backend: Backend,
) -> None:
    record = await backend.claim(SESSION, metadata={"k": [1]}, lease_ttl=30, retention=60)
    record.metadata["k"] = 999
    result = await backend.head(SESSION)
    assert result is not None
    info = result.info()
    assert info.metadata == {"k": [1]}
    info.metadata["k"].append(2)  # type: ignore[union-attr]
    await backend.finish(
        SESSION, record.generation, state=State.DONE, error=None, error_type=None, retention=60
    )
    again = await backend.claim(SESSION, metadata={}, lease_ttl=30, retention=60)
    assert again.previous is not None
    again.previous[1].metadata["k"] = "changed"
    result = await backend.head(SESSION)
    assert result is not None
    assert result.previous is not None
    assert result.previous[1].metadata == {"k": [1]}


async def test_a_hub_round_trip_produce_read_resume_cancel_list_and_remove(
    make_hub: HubFactory,
) -> None:
    """The hub's whole round on one backend: what the ACL user and TLS
    servers must allow, end to end (the rest of the contract suite runs on
    the plain kinds)."""
    async with make_hub(lease_ttl=2.0) as hub, anyio.create_task_group() as tg:
        async with hub.produce("round", metadata={"m": 1}) as stream:
            first = await stream.send("a")
            await stream.send({"b": [1]}, event="tool")
            await stream.send(b"\x00c")
            await stream.set_metadata({"m": 2})
        events, outcome = await collect(hub, "round")
        assert [event.data for event in events] == ["a", {"b": [1]}, b"\x00c"]
        assert outcome == Outcome(State.DONE, None, {"m": 2})
        resumed, _ = await collect(hub, "round", after=first)
        assert [event.id for event in resumed] == [event.id for event in events[1:]]

        claimed = anyio.Event()

        async def endless() -> None:
            async with hub.produce("stop me") as stream:
                claimed.set()
                while True:
                    await stream.send("tick")
                    await anyio.sleep(0.01)

        tg.start_soon(endless)
        await claimed.wait()
        assert await hub.active(["stop me", "round"]) == {"stop me": True, "round": False}
        info = await hub.cancel("stop me", wait=5)
        assert info is not None
        assert info.state is State.CANCELLED
        listed = await hub.sessions()
        assert [session.session_id for session in listed] == ["stop me", "round"]
        assert await hub.remove("round")
        assert await hub.info("round") is None
        with pytest.raises(SessionNotFoundError):
            async with hub.subscribe("round"):
                pass


async def test_renew_many_renews_each_lease_and_answers_each_in_order(
    backend: Backend, backend_kind: str
) -> None:
    renew_many = getattr(backend, "renew_many", None)
    if "cluster" in backend_kind:
        # Sessions live on different nodes there: one slow node must not
        # hold back the others' renewals, so each lease is renewed alone.
        assert renew_many is None
        return
    assert renew_many is not None
    # More than one script call's worth (128), so the answers of several
    # calls must come back in the order asked.
    names = [f"lease{index}" for index in range(130)]
    generations = {}
    for name in names:
        record = await backend.claim(name, metadata={}, lease_ttl=2, retention=60)
        generations[name] = record.generation
    await backend.request_cancel(names[1])
    await backend.finish(
        names[2], generations[names[2]], state=State.DONE, error=None, error_type=None, retention=60
    )
    leases = [(name, generations[name]) for name in names]
    leases[3] = (names[3], generations[names[3]] + 1)  # a generation it never had
    leases.append(("never claimed", 1))
    results = await renew_many(leases, lease_ttl=30)
    assert len(results) == len(leases)
    assert results[0] == Renewal(cancel_requested=False)
    assert results[1] == Renewal(cancel_requested=True)
    for lost in (results[2], results[3], results[-1]):
        assert isinstance(lost, LeaseLostError)
    assert results[4:-1] == [Renewal(cancel_requested=False)] * (len(leases) - 5)
    for name in (names[0], names[-1]):  # renewed to 30 s, from 2
        head = await backend.head(name)
        assert head is not None
        assert head.lease_remaining is not None
        assert head.lease_remaining > 20
    head = await backend.head(names[3])  # the wrong generation renewed nothing
    assert head is not None
    assert head.lease_remaining is not None
    assert head.lease_remaining <= 2


async def test_a_write_after_the_lease_ran_out_is_refused_and_stores_the_abandonment(
    backend: Backend,
) -> None:
    # Both ways a producer's writes arrive: alone, and gathered with others.
    for name, gathered in (("alone", False), ("gathered", True)):
        record = await backend.claim(name, metadata={"m": 1}, lease_ttl=0.2, retention=60)
        await backend.append(name, record.generation, stored(1, MIXED[:2]), metadata=None)
        await anyio.sleep(0.3)
        late = stored(3, MIXED[2:3])
        append_many = getattr(backend, "append_many", None)
        if gathered and append_many is not None:
            [error] = await append_many([AppendRequest(name, record.generation, late, None)])
            assert isinstance(error, LeaseLostError)
            assert "abandoned" in str(error)
        else:
            with pytest.raises(LeaseLostError, match="abandoned"):
                await backend.append(name, record.generation, late, metadata=None)
        head = await backend.head(name)
        assert head is not None
        assert head.state is State.ABANDONED
        assert head.last_seq == 2
        assert head.metadata == {"m": 1}
