"""Redis-specific properties: connections stay few and fixed, cancellations
never lose coredis pool slots, keys expire, URLs and errors are clear."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import TaskStatus
from hypothesis import given
from hypothesis import strategies as st

from replayhub import (
    BackendUnavailableError,
    Event,
    EventsLostError,
    Hub,
    InvalidInputError,
    LeaseLostError,
    SessionNotFoundError,
    State,
)
from replayhub._events import Cursor, DataKind, StoredEvent
from replayhub.backends import AppendRequest
from replayhub.backends.redis import RedisBackend
from replayhub.backends.redis._backend import MAX_PER_CALL
from replayhub.backends.redis._connect import MAX_CONNECTIONS
from replayhub.backends.redis._keys import (
    decode_columns,
    decode_notification,
    encode_batch,
    session_keys,
)
from replayhub.backends.redis._sentinel import FailoverWatch, could_be_promoted

from .helpers import collect, texts
from .redis_server import RedisServer, free_port


def client_count(server: RedisServer) -> int:
    """Connections to the server, not counting redis-cli's own."""
    return server.command("CLIENT", "LIST").count(b"\n") - 1


def pool_of(hub: Hub) -> Any:
    backend = hub._backend
    assert isinstance(backend, RedisBackend)
    driver: Any = backend._driver
    return driver._client.connection_pool


def free_slots(hub: Hub) -> int:
    return len(pool_of(hub)._available_connections._queue)


@pytest.mark.usefixtures("redis_driver")
async def test_a_hub_opens_its_command_connection_before_its_first_request(
    fresh_redis: RedisServer,
) -> None:
    """A fresh process's first request does not wait for a connection: the
    hub opens it while it starts (its Pub/Sub client takes the connection
    the start-up check opened), and no more than the request would have."""
    async with Hub.from_url(fresh_redis.url) as hub:
        assert client_count(fresh_redis) == 2  # Pub/Sub, and one for commands
        assert await hub.info("nothing") is None
        assert client_count(fresh_redis) == 2


@pytest.mark.usefixtures("redis_driver")
async def test_a_thousand_subscriptions_share_a_few_connections(
    fresh_redis: RedisServer, redis_driver: str
) -> None:
    sessions, per_session = 100, 10
    go = anyio.Event()
    joined = 0
    all_joined = anyio.Event()
    received: list[str] = []

    async def producer(hub: Hub, name: str, *, task_status: TaskStatus[None]) -> None:
        async with hub.produce(name) as stream:
            task_status.started()
            await go.wait()
            await stream.send(name)

    async def subscriber(hub: Hub, name: str) -> None:
        nonlocal joined
        async with hub.subscribe(name) as events:
            joined += 1
            if joined == sessions * per_session:
                all_joined.set()
            async for event in events:
                received.append(str(event.data))

    async with Hub.from_url(fresh_redis.url) as hub:
        async with anyio.create_task_group() as tg:
            for i in range(sessions):
                await tg.start(producer, hub, f"s{i}")
            for i in range(sessions * per_session):
                tg.start_soon(subscriber, hub, f"s{i % sessions}")
            with anyio.fail_after(30):
                await all_joined.wait()
            connections = client_count(fresh_redis)
            go.set()
        print(f"\n1,000 subscriptions over 100 sessions: {connections} Redis connections")
        # coredis multiplexes commands (3 seen); redis-py's pool holds 4.
        assert connections <= (3 if redis_driver == "coredis" else 4)
        assert sorted(received) == sorted(f"s{i % sessions}" for i in range(sessions * per_session))


async def test_cancelled_operations_never_lose_pool_slots(fresh_redis: RedisServer) -> None:
    rounds = 80  # more than coredis's 64 slots: a leak per cancel would hang
    async with Hub.from_url(fresh_redis.url, lease_ttl=2.0) as hub:
        async with hub.produce("done") as finished:
            for n in range(8000):  # three pages
                await finished.send(n)
        async with hub.produce("live") as stream:
            await stream.send("x")
            await stream.flush()
            slots = free_slots(hub)
            for i in range(rounds):
                # A subscription cancelled while it waits for events...
                with anyio.move_on_after(0.002 * (i % 5)):
                    async with hub.subscribe("live") as events:
                        async for _ in events:
                            pass
                # ...a producer cancelled in the middle of its writes...
                with anyio.move_on_after(0.001 * (i % 4)):
                    async with hub.produce(f"p{i}") as cancelled:
                        for n in range(1000):
                            await cancelled.send(n)
                # ...a replay of a finished session cancelled between or in
                # its page reads (the later pages are pipelines)...
                with anyio.move_on_after(0.0005 * (i % 9)):
                    async with hub.subscribe("done") as replayed:
                        async for _ in replayed:
                            pass
                # ...and a cancel waiter cancelled while it waits.
                with anyio.move_on_after(0.001 * (i % 3)):
                    await hub.cancel(f"p{i}", wait=1)
            with anyio.fail_after(5):
                info = await hub.info("live")
            assert info is not None
            assert info.state is State.LIVE
            assert free_slots(hub) == slots
            # A page read's pipeline takes a connection of its own (others
            # share one), so the pool may have opened one more: within its
            # bound (Pub/Sub's is not pooled).
            assert client_count(fresh_redis) <= MAX_CONNECTIONS
        # Every interrupted producer still claimed (the claim is shielded) and
        # ended cancelled, not held live until its lease ran out.
        for i in range(rounds):
            produced = await hub.info(f"p{i}")
            assert produced is not None
            assert produced.state is State.CANCELLED


async def test_connections_killed_while_in_use_give_their_pool_slots_back(
    fresh_redis: RedisServer,
) -> None:
    # coredis drops the pool slot of a connection that dies checked out (the
    # Pub/Sub one always is); the hub's pools give it back, or a pool of
    # MAX_CONNECTIONS would run dry after a few kills and every call hang.
    async with Hub.from_url(fresh_redis.url, lease_ttl=2.0) as hub:
        slots = free_slots(hub)
        for round_ in range(3 * MAX_CONNECTIONS):
            fresh_redis.command("client", "kill", "type", "pubsub")
            fresh_redis.command("client", "kill", "type", "normal", "skipme", "yes")
            with anyio.fail_after(10):
                async with hub.produce(f"s{round_}") as stream:
                    await stream.send(round_)
                events, outcome = await collect(hub, f"s{round_}")
            assert texts(events) == [round_]
            assert outcome.state is State.DONE
        assert free_slots(hub) == slots
        assert client_count(fresh_redis) <= MAX_CONNECTIONS


@pytest.mark.usefixtures("redis_driver")
async def test_events_redis_lost_make_the_producer_fail_loudly(fresh_redis: RedisServer) -> None:
    # As when a primary dies before its replica has the last write batch:
    # the batch is gone from the log and the count. The next write must not
    # leave a hole: the producer fails, and says why.
    keys = session_keys("replayhub", "s")
    async with Hub.from_url(fresh_redis.url) as hub:
        with pytest.raises(EventsLostError, match="events 4-5 are gone"):
            async with hub.produce("s") as stream:
                # Without a checkpoint between them, each group is one batch.
                for index in range(3):
                    stream.send_nowait(index)
                await stream.flush()
                for index in range(3, 5):
                    stream.send_nowait(index)
                await stream.flush()
                fresh_redis.command("xdel", keys.log, f"{stream.generation}-5")
                fresh_redis.command("hset", keys.session, "n", "3")
                await stream.send(5)
                await stream.flush()
        events, outcome = await collect(hub, "s")
    assert outcome.state is State.FAILED
    assert outcome.error is not None
    assert "events 4-5 are gone" in outcome.error
    assert texts(events) == [0, 1, 2]


@pytest.mark.usefixtures("redis_driver")
async def test_notifications_that_do_not_follow_cost_a_read_never_an_event(
    fresh_redis: RedisServer,
) -> None:
    # A batch rides in its notification; one the hub cannot read, one that
    # repeats what it has, or one past a gap must not reach a reader as is.
    keys = session_keys("replayhub", "s")
    received: list[object] = []
    got_first = anyio.Event()

    async def reader(hub: Hub, *, task_status: TaskStatus[None]) -> None:
        async with hub.subscribe("s") as events:
            task_status.started()
            async for event in events:
                received.append(event.data)
                got_first.set()

    def forged(generation: int, first: int, texts: list[str]) -> bytes:
        events = [
            StoredEvent(first + index, "message", DataKind.TEXT, text)
            for index, text in enumerate(texts)
        ]
        return b"%d-%d " % (generation, first + len(texts) - 1) + encode_batch(events)

    async with Hub.from_url(fresh_redis.url) as hub, anyio.create_task_group() as tg:
        async with hub.produce("s") as stream:
            await tg.start(reader, hub)
            await stream.send("a")
            await stream.flush()
            with anyio.fail_after(5):
                await got_first.wait()
            generation = stream.generation
            for message in (
                b"%d-2 not a batch" % generation,
                forged(generation, 1, ["repeated"]),
                forged(generation, 5, ["past", "a", "gap"]),
                forged(generation + 1, 1, ["other generation"]),
            ):
                fresh_redis.command("PUBLISH", keys.changes, message.decode())
            await anyio.sleep(0.1)
            await stream.send("b")
    assert received == ["a", "b"]


def test_a_one_event_batch_packs_as_any_batch_does() -> None:
    # One event per write is the common case and has a way of its own: the
    # stored format must be the same to the byte (JSON header of runs, then
    # the payloads; lengths in characters for text and JSON, bytes for bytes).
    for event, packed in [
        (StoredEvent(1, "message", DataKind.TEXT, "é\n"), '[[0,"message",3,[2]]]\né\n'.encode()),
        (StoredEvent(9, "ünï", DataKind.JSON, '{"é":1}'), '[[2,"ünï",8,[7]]]\n{"é":1}'.encode()),
        (StoredEvent(2, 'a"b', DataKind.BYTES, b"\xff\x00"), b'[[1,"a\\"b",2,[2]]]\n\xff\x00'),
        (StoredEvent(3, "e", DataKind.TEXT, ""), b'[[0,"e",0,[0]]]\n'),
    ]:
        assert encode_batch([event]) == packed


def test_a_change_notification_carries_its_batch_or_nothing() -> None:
    events = [
        StoredEvent(3, "message", DataKind.TEXT, "é\n"),
        StoredEvent(4, "bin", DataKind.BYTES, b"\xff"),
    ]
    decoded = decode_notification(b"7-4 " + encode_batch(events))
    assert decoded == (7, events)
    assert decoded[1][0].shared == Event("7-3", "message", "é\n")
    assert decode_notification(b"7-4") is None


_PAYLOADS: dict[DataKind, st.SearchStrategy[Any]] = {
    DataKind.TEXT: st.text(max_size=30),
    DataKind.BYTES: st.binary(max_size=30),
    DataKind.JSON: st.sampled_from(['{"a": 1}', "[1, 2]", '"\\u00e9"', "null"]),
}


@st.composite
def stored_batches(draw: st.DrawFn) -> list[StoredEvent]:
    first = draw(st.integers(min_value=1, max_value=10**12))
    events = []
    for seq in range(first, first + draw(st.integers(min_value=1, max_value=4))):
        kind = draw(st.sampled_from(list(DataKind)))
        name = draw(st.sampled_from(["message", "text-delta", "é名", "e" * 64]))
        events.append(StoredEvent(seq, name, kind, draw(_PAYLOADS[kind])))
    return events


def shared_event(generation: int, stored: StoredEvent) -> Event | None:
    """The Event every reader of ``stored`` should share, built apart from
    the decoder (``to_event`` would hand back what the decoder built)."""
    if stored.kind is DataKind.JSON:
        return None  # decoded per reader
    return Event(f"{generation}-{stored.seq}", stored.event, stored.payload)


@st.composite
def batches_of_runs(draw: st.DrawFn) -> list[StoredEvent]:
    """A write batch as runs of events of one kind and name (a cursor or a
    limit often falls inside a run)."""
    events: list[StoredEvent] = []
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        kind = draw(st.sampled_from(list(DataKind)))
        name = draw(st.sampled_from(["message", "é名"]))
        for _ in range(draw(st.integers(min_value=1, max_value=6))):
            events.append(StoredEvent(len(events) + 1, name, kind, draw(_PAYLOADS[kind])))
    return events


@st.composite
def one_event_batches(draw: st.DrawFn) -> list[StoredEvent]:
    """A batch of one event, as a chat-rate producer writes each token."""
    kind = draw(st.sampled_from(list(DataKind)))
    return [StoredEvent(1, draw(st.sampled_from(["message", "é名"])), kind, draw(_PAYLOADS[kind]))]


@given(
    st.lists(batches_of_runs() | one_event_batches(), min_size=1, max_size=8),
    st.integers(min_value=0, max_value=60),
    st.none() | st.integers(min_value=1, max_value=30),
)
def test_stored_entries_decode_to_the_events_after_the_cursor_up_to_the_limit(
    batches: list[list[StoredEvent]], skip: int, limit: int | None
) -> None:
    """A page read hands decode_columns whole entries (write batches, each
    of runs of one kind and name): it returns exactly the events after the
    cursor, at most ``limit``, unpacked each with the Event readers share,
    or built as one reader receives them."""
    entries, events, seq = [], [], 0
    for batch in batches:  # renumbered to follow each other, as in a log
        batch = [StoredEvent(seq + i + 1, e.event, e.kind, e.payload) for i, e in enumerate(batch)]
        seq += len(batch)
        entries.append((b"9-%d" % seq, [b"b", encode_batch(batch)]))
        events += batch
    after_seq = min(skip, seq)
    packed = decode_columns(entries, after_seq=after_seq, limit=limit)
    wanted = events[after_seq:] if limit is None else events[after_seq : after_seq + limit]
    decoded = packed.unpack(0, len(packed), share=9)
    assert decoded == wanted
    for stored in decoded:
        assert stored.shared == shared_event(9, stored)
    assert packed.events(9, 0, len(packed)) == [stored.to_event(9) for stored in wanted]


def test_a_log_with_events_missing_between_entries_is_not_decoded() -> None:
    """Read as columns, the events are numbered from the first: an entry
    that does not follow the one before would renumber the rest, so it is
    refused, never handed out as other events."""

    def entry(first: int, count: int) -> tuple[bytes, list[bytes]]:
        batch = [StoredEvent(first + i, "m", DataKind.TEXT, f"e{first + i}") for i in range(count)]
        return b"3-%d" % (first + count - 1), [b"b", encode_batch(batch)]

    whole = decode_columns([entry(1, 2), entry(3, 1), entry(4, 3)], after_seq=1, limit=None)
    assert [event.data for event in whole.events(3, 0, len(whole))] == [
        f"e{seq}" for seq in range(2, 7)
    ]
    with pytest.raises(EventsLostError, match="events 3-4 are missing"):
        decode_columns([entry(1, 2), entry(5, 2)], after_seq=0, limit=None)
    with pytest.raises(EventsLostError, match="repeats events 2-2"):
        decode_columns([entry(1, 2), entry(2, 2)], after_seq=0, limit=None)
    # One-event entries (a chat-rate log) take their own way: checked alike.
    with pytest.raises(EventsLostError, match="events 3-3 are missing"):
        decode_columns([entry(1, 1), entry(2, 1), entry(4, 1)], after_seq=0, limit=None)
    with pytest.raises(EventsLostError, match="repeats events 2-2"):
        decode_columns([entry(1, 1), entry(2, 1), entry(2, 1)], after_seq=0, limit=None)
    with pytest.raises(EventsLostError, match="events 3-4 are missing"):
        decode_columns([entry(1, 2), entry(5, 1)], after_seq=1, limit=None)
    tokens = decode_columns([entry(seq, 1) for seq in range(1, 9)], after_seq=3, limit=4)
    assert (tokens.first_seq, len(tokens)) == (4, 4)
    assert [event.id for event in tokens.events(3, 0, 4)] == [f"3-{seq}" for seq in range(4, 8)]
    # Before the cursor, an entry is skipped on its id, unread.
    skipped = decode_columns([(b"3-2", [b"b", b"not a batch"]), entry(3, 1)], after_seq=2, limit=5)
    assert skipped.first_seq == 3
    assert len(skipped) == 1


@given(stored_batches(), st.integers(min_value=1, max_value=10**6))
def test_a_notification_decodes_to_the_batch_it_carries(
    events: list[StoredEvent], generation: int
) -> None:
    """Single events take a shorter way (a token at chat rates): any batch,
    of one event or more, decodes to exactly what was stored."""
    message = b"%d-%d " % (generation, events[-1].seq) + encode_batch(events)
    decoded = decode_notification(message)
    assert decoded == (generation, events)
    for stored in decoded[1]:
        assert stored.shared == shared_event(generation, stored)


@pytest.mark.usefixtures("redis_driver")
async def test_appends_of_many_sessions_share_script_calls(fresh_redis: RedisServer) -> None:
    producers, batches = 50, 20
    async with Hub.from_url(fresh_redis.url) as hub:
        started = anyio.Event()

        async def produce(name: str, *, task_status: TaskStatus[None]) -> None:
            async with hub.produce(name) as stream:
                task_status.started()
                await started.wait()
                for index in range(batches):
                    await stream.send(index)
                    await stream.flush()  # one append per event

        async with anyio.create_task_group() as tg:
            for index in range(producers):
                await tg.start(produce, f"s{index}")
            calls_before = fresh_redis.calls("evalsha")
            started.set()
        calls = fresh_redis.calls("evalsha") - calls_before
        for index in range(producers):
            events, outcome = await collect(hub, f"s{index}")
            assert outcome.state is State.DONE
            assert texts(events) == list(range(batches))
    # Alone, each append is a call: 1,000, plus the terminal writes.
    assert calls < producers * batches // 2, calls


@pytest.mark.usefixtures("redis_driver")
async def test_a_page_read_carries_only_the_entries_that_hold_the_page(
    fresh_redis: RedisServer,
) -> None:
    # A log entry is one write batch (up to 1,000 events from a fast
    # producer): a page that carried every entry it touched and more would
    # send the rest of a long log with every page (a 10,000-event replay
    # then moved three times the log). Batches of 100 here, then a run of
    # single events, as a chat-rate producer writes them.
    async with RedisBackend(fresh_redis.url, namespace="pages") as backend:
        record = await backend.claim("s", metadata={}, lease_ttl=30, retention=60)
        seq = 0
        for size in [100] * 10 + [1] * 50:
            batch = [
                StoredEvent(seq + index, "message", DataKind.TEXT, str(seq + index))
                for index in range(1, size + 1)
            ]
            await backend.append("s", record.generation, batch, metadata=None)
            seq += size
        ends = [100 * index for index in range(1, 11)] + list(range(1001, 1051))
        for after in (0, 1, 99, 100, 150, 950, 999, 1000, 1020, 1049):
            for limit in (1, 2, 50, 100, 101, 250, 2048):
                found = await backend._read(
                    "s", after=Cursor(record.generation, after), limit=limit
                )
                assert found is not None
                last = min(after + limit, 1050)
                # Every entry from the one holding event after + 1 to the
                # one holding the page's last event, and none beyond.
                wanted = [end for end in ends if end > after]
                wanted = wanted[: next(i for i, end in enumerate(wanted) if end >= last) + 1]
                got = [int(entry_id.split(b"-")[1]) for entry_id, _ in found[1]]
                assert got == wanted, (after, limit)


@pytest.mark.usefixtures("redis_driver")
async def test_a_session_being_written_moves_up_the_index_at_most_once_a_second(
    fresh_redis: RedisServer,
) -> None:
    # Ranking by the latest change costs the server a sorted-set update; per
    # model token that was a quarter of an append's time, so writes within a
    # second of the last one that moved the session leave its rank alone.
    def score() -> float:
        return float(fresh_redis.command("ZSCORE", "rank:index", "s"))

    async with RedisBackend(fresh_redis.url, namespace="rank") as backend:
        record = await backend.claim("s", metadata={}, lease_ttl=30, retention=60)

        async def append(seq: int) -> None:
            event = StoredEvent(seq, "message", DataKind.TEXT, str(seq))
            await backend.append("s", record.generation, [event], metadata=None)

        await append(1)
        first = score()
        await append(2)
        assert score() == first
        await anyio.sleep(1.05)
        await append(3)
        assert score() >= first + 1000
        read = await backend.read("s", after=None, limit=10)
        assert read is not None
        assert [event.payload for event in read[1]] == ["1", "2", "3"]


async def test_appends_past_one_calls_worth_answer_in_order_and_go_out_at_once_on_coredis(
    fresh_redis: RedisServer, redis_driver: str
) -> None:
    # One after another, each script call waits for its turn of a busy loop:
    # on coredis, which pipelines commands on one connection, the calls go
    # out together (an overloaded process's p99 went from 2.5 s to 0.9); on
    # redis-py, where each holds a connection, one after another (three at
    # once cost 5-10% more CPU). Each answer must reach its own append,
    # fenced ones in every call among them.
    count = 2 * MAX_PER_CALL + 5
    names = [f"s{index}" for index in range(count)]
    fenced = {3, MAX_PER_CALL + 7, count - 1}
    async with RedisBackend(fresh_redis.url, namespace="calls") as backend:
        generations = {}
        for name in names:
            record = await backend.claim(name, metadata={}, lease_ttl=30, retention=60)
            generations[name] = record.generation
        appends = [
            AppendRequest(
                name,
                generations[name] + (index in fenced),
                [StoredEvent(1, "message", DataKind.TEXT, f"from {name}")],
                None,
            )
            for index, name in enumerate(names)
        ]
        in_flight = most = 0
        call = backend._call

        async def counted(*args: Any, **kwargs: Any) -> Any:
            nonlocal in_flight, most
            in_flight += 1
            most = max(most, in_flight)
            try:
                return await call(*args, **kwargs)
            finally:
                in_flight -= 1

        backend._call = counted  # type: ignore[method-assign]
        results = await backend.append_many(appends)
        assert most == (3 if redis_driver == "coredis" else 1)
        for index, (name, result) in enumerate(zip(names, results, strict=True)):
            read = await backend.read(name, after=None, limit=10)
            assert read is not None
            if index in fenced:
                assert isinstance(result, LeaseLostError), index
                assert read[1] == []
            else:
                assert result is None, index
                assert [event.payload for event in read[1]] == [f"from {name}"]


@pytest.mark.usefixtures("redis_driver")
async def test_one_append_call_for_many_sessions_keeps_each_ones_data_apart(
    fresh_redis: RedisServer,
) -> None:
    # append_many packs every session's part into one argument: ids, metadata
    # and payloads of any bytes (newlines, digits, multi-byte text) must come
    # back exactly, each reply in its place, a fenced-out one among them.
    tricky_text = "1 2 3 4 5 6\nline two é 🙂"
    tricky_bytes = b"\n9 9 9 9 9 9\n\x00\xff"
    async with RedisBackend(fresh_redis.url, namespace="pack") as backend:
        ids = ["plain", "chat-é-🙂", "{braces}", "metadata-only", "fenced"]
        generations = {}
        for session_id in ids:
            record = await backend.claim(session_id, metadata={}, lease_ttl=30, retention=60)
            generations[session_id] = record.generation
        texts_stored = [StoredEvent(1, "message", DataKind.TEXT, tricky_text)]
        mixed = [
            StoredEvent(1, "message", DataKind.TEXT, "a"),
            StoredEvent(2, "bin", DataKind.BYTES, tricky_bytes),
            StoredEvent(3, "message", DataKind.JSON, '{"k": "é"}'),
        ]
        appends = [
            AppendRequest("plain", generations["plain"], mixed, None),
            AppendRequest("chat-é-🙂", generations["chat-é-🙂"], texts_stored, None),
            AppendRequest("{braces}", generations["{braces}"], texts_stored, {"note": "ß\n"}),
            AppendRequest("metadata-only", generations["metadata-only"], [], {"m": "🙂"}),
            AppendRequest("fenced", generations["fenced"] + 1, texts_stored, None),
        ]
        results = await backend.append_many(appends)
        assert results[:4] == [None, None, None, None]
        assert isinstance(results[4], LeaseLostError)
        for session_id, events in [
            ("plain", mixed),
            ("chat-é-🙂", texts_stored),
            ("{braces}", texts_stored),
            ("metadata-only", []),
            ("fenced", []),
        ]:
            read = await backend.read(session_id, after=None, limit=10)
            assert read is not None
            record, stored = read
            assert [(e.seq, e.event, e.kind, e.payload) for e in stored] == [
                (e.seq, e.event, e.kind, e.payload) for e in events
            ], session_id
        metadata_only = await backend.head("metadata-only")
        assert metadata_only is not None
        assert metadata_only.metadata == {"m": "🙂"}
        braces = await backend.head("{braces}")
        assert braces is not None
        assert braces.metadata == {"note": "ß\n"}
        # Every one stored: the script answers in one word, each its None.
        more = [StoredEvent(4, "message", DataKind.TEXT, tricky_text)]
        results = await backend.append_many(
            [
                AppendRequest("plain", generations["plain"], more, None),
                AppendRequest("metadata-only", generations["metadata-only"], [], {"m": 2}),
            ]
        )
        assert results == [None, None]
        read = await backend.read("plain", after=Cursor(generations["plain"], 3), limit=10)
        assert read is not None
        assert [(e.seq, e.payload) for e in read[1]] == [(4, tricky_text)]


@pytest.mark.usefixtures("redis_driver")
async def test_a_claim_asked_again_is_still_that_claim(fresh_redis: RedisServer) -> None:
    """A claim that landed but was not confirmed (behind Sentinel, before a
    replica had it) is asked again with its token: the session is still that
    claim's, same generation, not busy; a claim with another token is
    refused."""

    def generation(reply: list[Any]) -> bytes:
        fields = dict(zip(reply[2][::2], reply[2][1::2], strict=True))
        return bytes(fields[b"g"])

    async with RedisBackend(fresh_redis.url, namespace="t") as backend:
        keys = backend._keys("chat")
        args = ("chat", "{}", 10_000, 60_000)
        first = await backend._run("claim", keys, *args, "token-a")
        again = await backend._run("claim", keys, *args, "token-a")
        other = await backend._run("claim", keys, *args, "token-b")
    assert first[0] == again[0] == b"ok"
    assert generation(again) == generation(first)
    assert other == [b"busy"]


async def test_a_finish_asked_again_is_still_that_finish(fresh_redis: RedisServer) -> None:
    """A terminal write that landed but was not confirmed is asked again:
    the session already ends as it says, so it is that write, not a lost
    claim; another end for the same generation still is one."""
    async with RedisBackend(fresh_redis.url, namespace="t") as backend:
        record = await backend.claim("chat", metadata={}, lease_ttl=10.0, retention=60.0)

        async def finish(state: State) -> None:
            await backend.finish(
                "chat", record.generation, state=state, error=None, error_type=None, retention=60.0
            )

        await finish(State.DONE)
        await finish(State.DONE)
        with pytest.raises(LeaseLostError, match="already done"):
            await finish(State.CANCELLED)
        info = await backend.head("chat")
    assert info is not None
    assert info.state is State.DONE


async def test_each_new_primary_announced_is_followed_once() -> None:
    """Every Sentinel announces the same switch: the hub moves once per new
    primary, for its own service only, and ignores what it cannot read."""
    switches: list[int] = []

    async def switched() -> None:
        switches.append(len(switches))

    watch = FailoverWatch("chat", switched)
    for data in (
        b"chat 10.0.0.1 6379 10.0.0.2 6379",
        b"chat 10.0.0.1 6379 10.0.0.2 6379",  # a second Sentinel, the same switch
        "chat 10.0.0.1 6379 10.0.0.2 6379",
        b"other 10.0.0.2 6379 10.0.0.3 6379",  # another service's
        b"chat 10.0.0.2 6379",  # not an announcement
        b"chat 10.0.0.2 6379 10.0.0.1 6379",  # and back: a new switch
    ):
        await watch.announced(data)
    assert switches == [0, 1]


#: One entry of ``SENTINEL REPLICAS`` as redis-py parses it (from a run of
#: the Sentinel tests): a replica up, connected and replicating.
REPLICA_ENTRY = {
    "name": "127.0.0.1:12407", "ip": "127.0.0.1", "port": 12407, "flags": "slave",
    "role-reported": "slave", "master-link-down-time": 0, "master-link-status": "ok",
    "down-after-milliseconds": 1000, "slave-priority": 100, "slave-repl-offset": 0,
}  # fmt: skip


@pytest.mark.parametrize(
    ("change", "promotable"),
    [
        ({}, True),
        ({"flags": "s_down,slave"}, False),
        ({"flags": "slave,disconnected"}, False),
        ({"role-reported": "master"}, False),  # an old primary not yet demoted
        ({"slave-priority": 0}, False),
        ({"master-link-status": "err", "master-link-down-time": 9_000}, True),
        ({"master-link-status": "err", "master-link-down-time": 11_000}, False),
        ({"flags": b"slave", "role-reported": b"slave", "slave-priority": b"100"}, True),
    ],
)
def test_a_replica_counts_as_promotable_as_sentinel_would_choose_it(
    change: dict[str, Any], promotable: bool
) -> None:
    assert could_be_promoted({**REPLICA_ENTRY, **change}) is promotable


async def test_keys_expire_after_retention(fresh_redis: RedisServer) -> None:
    async with Hub.from_url(fresh_redis.url, retention=0.5, lease_ttl=0.2) as hub:
        async with hub.produce("s") as stream:
            await stream.send("x")
        keys = session_keys("replayhub", "s")
        ttl = int(fresh_redis.command("PTTL", keys.session))
        assert 0 < ttl <= 500
        assert 0 < int(fresh_redis.command("PTTL", keys.log)) <= 500
        await anyio.sleep(0.7)
        assert await hub.info("s") is None
    # All expired (EXISTS sees an expired key as gone; DBSIZE counts it
    # until Redis's expiry cycle deletes it, below).
    assert fresh_redis.command("EXISTS", keys.session, keys.log, keys.index).strip() == b"0"
    await anyio.sleep(0.3)
    assert fresh_redis.command("DBSIZE").strip() == b"0"


async def test_a_live_logs_expiry_is_set_by_its_first_write_and_kept_by_renewals(
    fresh_redis: RedisServer,
) -> None:
    # Writes do not extend it (a call per token less for Redis): the lease's
    # renewals extend the log with the session's hash, so neither outlives
    # the other.
    keys = session_keys("replayhub", "s")
    async with Hub.from_url(fresh_redis.url, retention=5.0, lease_ttl=0.6) as hub:
        async with hub.produce("s") as stream:
            await stream.send("first")
            await stream.flush()
            first = int(fresh_redis.command("PTTL", keys.log))
            assert 5_000 < first <= 5_600  # lease + retention
            for _ in range(8):  # 0.8 s of writes: at least two renewals
                await anyio.sleep(0.1)
                await stream.send("more")
            await stream.flush()
            log_ttl = int(fresh_redis.command("PTTL", keys.log))
            session_ttl = int(fresh_redis.command("PTTL", keys.session))
            assert log_ttl > first - 500  # extended since, by a renewal
            assert abs(log_ttl - session_ttl) < 50  # by the same call


@pytest.mark.usefixtures("redis_driver")
async def test_crashed_producer_keys_expire_unread(fresh_redis: RedisServer) -> None:
    async with Hub.from_url(fresh_redis.url, retention=0.3, lease_ttl=0.2) as hub:
        backend = hub._backend
        await backend.claim("ghost", metadata={}, lease_ttl=0.2, retention=0.3)
    # Nobody reads the session again: its keys still go, lease + retention later.
    await anyio.sleep(0.8)
    assert fresh_redis.command("DBSIZE").strip() == b"0"


def hash_tag(key: str) -> str:
    """The part of a key Redis Cluster hashes (its rule, from the cluster spec)."""
    start = key.find("{")
    end = key.find("}", start + 1)
    if start == -1 or end == -1 or end == start + 1:
        return key
    return key[start + 1 : end]


@pytest.mark.parametrize("session_id", ["{a}", "a}{b", "}{", "%7B", "plain", "{}"])
def test_session_ids_with_braces_keep_one_hash_slot(session_id: str) -> None:
    keys = session_keys("ns", session_id)
    assert hash_tag(keys.session) == hash_tag(keys.log) != keys.session
    assert "{" not in hash_tag(keys.session)
    assert "}" not in hash_tag(keys.session)
    # Escaping is one-to-one: different ids never share keys.
    assert keys.session != session_keys("ns", session_id + "}").session
    assert session_keys("ns", "%7B").session != session_keys("ns", "{").session


@pytest.mark.parametrize(
    "url",
    [
        "redis://",
        "redis://host:notaport",
        "rediss://:1",
        "redis+cluster://host",  # no port
        "redis+cluster://a:1,:2",  # a host missing
        "redis+cluster://a:1/0",  # clusters have no databases
        "redis+sentinel://a:1",  # no service name
        "redis+sentinel://a:1/service/db",  # db not a number
        "redis+sentinel://a:1/service/0/more",
    ],
)
def test_malformed_redis_urls_are_rejected(url: str) -> None:
    with pytest.raises(InvalidInputError):
        Hub.from_url(url)


@pytest.mark.usefixtures("redis_driver")
async def test_unreachable_redis_is_a_clear_error() -> None:
    hub = Hub.from_url(f"redis://127.0.0.1:{free_port()}/0?driver={RedisServer.driver}")
    with anyio.fail_after(15), pytest.raises(BackendUnavailableError, match="cannot"):
        async with hub:
            pass


@pytest.mark.usefixtures("redis_driver")
async def test_password_and_unix_socket_urls(tmp_path: Path) -> None:
    socket_path = tmp_path / "redis.sock"
    server = RedisServer(
        tmp_path / "auth",
        extra=(
            "--requirepass",
            "s3cret",
            "--unixsocket",
            str(socket_path),
            "--unixsocketperm",
            "700",
        ),
    ).start()
    try:
        driver = RedisServer.driver
        urls = [
            f"redis://:s3cret@127.0.0.1:{server.port}/0?driver={driver}",
            f"redis://default:s3cret@127.0.0.1:{server.port}/1?driver={driver}",
            f"unix://:s3cret@{socket_path}?db=0&driver={driver}",
        ]
        for url in urls:
            async with Hub.from_url(url) as hub:
                async with hub.produce("s") as stream:
                    await stream.send("ok")
                async with hub.subscribe("s") as events:
                    assert [event.data async for event in events] == ["ok"]
        for bad in (
            f"redis://:wrong@127.0.0.1:{server.port}/0?driver={driver}",
            f"redis://127.0.0.1:{server.port}/0?driver={driver}",
        ):
            with anyio.fail_after(15), pytest.raises(BackendUnavailableError):
                async with Hub.from_url(bad):
                    pass
    finally:
        server.stop()


@pytest.mark.usefixtures("redis_driver")
async def test_a_session_produced_here_is_not_heard_back_and_others_are_heard_after(
    fresh_redis: RedisServer,
) -> None:
    # While hub `a` produces a session, its readers get every change from
    # `a` itself and Redis sends it no notifications for it; once the
    # producer ends, `a` listens again: a new generation produced by hub `b`
    # reaches `a`'s readers live, and so does a removal made from `b`.
    changes = session_keys("replayhub", "s").changes

    def listeners() -> int:
        return int(fresh_redis.command("pubsub", "numsub", changes).split()[-1])

    async with Hub.from_url(fresh_redis.url) as a, Hub.from_url(fresh_redis.url) as b:
        producing = a.produce("s")
        stream = await producing.__aenter__()
        async with a.subscribe("s") as local:
            await stream.send("one")
            assert (await local.__anext__()).data == "one"
            assert listeners() == 0
            await producing.__aexit__(None, None, None)  # the end comes from `a` too
            with anyio.fail_after(5):
                assert [event.data async for event in local] == []
            assert local.outcome is not None
            assert local.outcome.state is State.DONE

        followed: list[object] = []
        with anyio.fail_after(5):  # live, not at the next lease re-check (10 s)
            await follow_b_from(a, b, after=local.last_event_id, into=followed)
        assert followed == ["two", "three"]

        async def produce_until_removed(*, task_status: TaskStatus[None]) -> None:
            with pytest.raises(LeaseLostError, match="removed"):
                async with a.produce("s") as third:
                    await third.send("four")
                    task_status.started()
                    await anyio.sleep_forever()

        async with anyio.create_task_group() as tasks:
            await tasks.start(produce_until_removed)
            async with a.subscribe("s") as reader:
                assert (await reader.__anext__()).data == "four"
                await b.remove("s")
                with anyio.fail_after(5), pytest.raises(SessionNotFoundError):
                    await reader.__anext__()


async def follow_b_from(a: Hub, b: Hub, *, after: str | None, into: list[object]) -> None:
    """``b`` produces a new generation of session ``s`` while a reader on
    ``a`` follows it live from ``after``."""
    following = anyio.Event()

    async def follow() -> None:
        async with a.subscribe("s", after=after) as events:
            following.set()
            into.extend([event.data async for event in events])

    async with anyio.create_task_group() as tasks:
        async with b.produce("s") as other:
            await other.send("two")
            await other.flush()
            tasks.start_soon(follow)
            await following.wait()
            await other.send("three")


async def test_a_hub_listens_to_a_session_only_while_someone_in_it_reads_it(
    fresh_redis: RedisServer,
) -> None:
    """Hub ``b`` subscribes to a session's channel when its first reader
    opens and leaves it when its last reader leaves, however the reader's
    block ends (a Redis subscription per session ever read would pile up)."""
    changes = session_keys("replayhub", "s").changes

    def listeners() -> int:
        return int(fresh_redis.command("pubsub", "numsub", changes).split()[-1])

    async def until_listeners(count: int) -> None:
        with anyio.fail_after(5):
            while listeners() != count:  # noqa: ASYNC110 - the server's view is waited for
                await anyio.sleep(0.01)

    async with Hub.from_url(fresh_redis.url) as a, Hub.from_url(fresh_redis.url) as b:
        async with a.produce("s") as stream:
            await stream.send("one")
            await stream.flush()
            async with b.subscribe("s") as first, b.subscribe("s") as second:
                assert (await first.__anext__()).data == "one"
                assert (await second.__anext__()).data == "one"
                assert listeners() == 1  # one Pub/Sub subscription for both
            await until_listeners(0)
            with pytest.raises(ZeroDivisionError):
                async with b.subscribe("s") as reader:
                    assert (await reader.__anext__()).data == "one"
                    assert listeners() == 1
                    1 / 0  # noqa: B018 - the block raises
            await until_listeners(0)
