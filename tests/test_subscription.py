"""The subscription's contract: replay then live, cursors, outcomes, slow and
departing readers."""

from __future__ import annotations

import gc

import anyio
import pytest
from anyio.abc import TaskStatus

from replayhub import (
    BackendUnavailableError,
    Event,
    EventsLostError,
    Hub,
    InvalidInputError,
    LeaseLostError,
    Outcome,
    SessionNotFoundError,
    State,
    Subscription,
)
from replayhub._events import DataKind, StoredEvent
from replayhub._feed import PAGE_SIZE, WINDOW

from .conftest import HubFactory
from .helpers import FaultyWrap, collect, texts


async def test_replays_then_follows_live_then_ends_with_the_outcome(hub: Hub) -> None:
    joined = anyio.Event()
    received: list[Event] = []

    async def subscriber(*, task_status: TaskStatus[None]) -> None:
        async with hub.subscribe("s") as events:
            task_status.started()
            async for event in events:
                received.append(event)
                if len(received) == 2:
                    joined.set()
        assert events.outcome is not None
        assert events.outcome.state is State.DONE

    async with anyio.create_task_group() as tg, hub.produce("s") as stream:
        await stream.send("replayed")
        await stream.flush()
        await tg.start(subscriber)
        await stream.send("live")
        with anyio.fail_after(2):
            await joined.wait()
        await stream.send("last")
    assert texts(received) == ["replayed", "live", "last"]


async def test_resume_after_an_id_yields_exactly_the_rest(hub: Hub) -> None:
    async with hub.produce("s") as stream:
        ids = [await stream.send(i) for i in range(10)]
    for cut in range(10):
        events, _ = await collect(hub, "s", after=ids[cut])
        assert texts(events) == list(range(cut + 1, 10))
    assert (await collect(hub, "s", after=ids[-1]))[0] == []


async def test_an_id_of_an_earlier_generation_replays_the_current_one(hub: Hub) -> None:
    async with hub.produce("s") as first:
        old_id = await first.send("old")
    async with hub.produce("s") as second:
        await second.send("new")
    events, _ = await collect(hub, "s", after=old_id)
    assert texts(events) == ["new"]


@pytest.mark.parametrize(
    "cursor", ["", "x", "1", "1-", "-1", "1-x", "0-1", "1-2-3", " 1-1", "\u0661-\u0661"]
)
async def test_malformed_cursor_is_rejected_at_once(hub: Hub, cursor: str) -> None:
    with pytest.raises(InvalidInputError):
        hub.subscribe("s", after=cursor)


async def test_cursor_beyond_the_end_is_rejected(hub: Hub) -> None:
    async with hub.produce("s") as stream:
        await stream.send("a")
    g = stream.generation
    for cursor in (f"{g}-2", f"{g + 1}-0", f"{g + 99999}-1"):
        with pytest.raises(InvalidInputError, match="beyond the end"):
            async with hub.subscribe("s", after=cursor):
                pass


async def test_a_subscription_is_one_block_and_leaves_its_feed_when_it_ends(hub: Hub) -> None:
    """Entered once at a time, and leaving gives the session's feed back:
    the hub follows a session only while someone reads it."""
    async with hub.produce("s") as stream:
        await stream.send("a")
        subscription = hub.subscribe("s")
        with pytest.raises(RuntimeError, match="not been entered"):
            await subscription.__aexit__(None, None, None)
        async with subscription as events:
            with pytest.raises(RuntimeError, match="already been entered"):
                async with subscription:
                    pass
            assert (await events.__anext__()).data == "a"
            assert "s" in hub._runtime.feeds._feeds
        assert "s" not in hub._runtime.feeds._feeds
        with pytest.raises(RuntimeError, match="inside its async with block"):
            await events.__anext__()


async def test_unknown_session_is_not_found(hub: Hub) -> None:
    with pytest.raises(SessionNotFoundError):
        async with hub.subscribe("nobody"):
            pass


async def test_batch_replay_joins_stored_text_runs_and_leaves_live_alone(hub: Hub) -> None:
    received: list[Event] = []
    async with hub.produce("s") as stream:
        for token in ["Hel", "lo", " wor", "ld"]:
            await stream.send(token, event="text-delta")
        await stream.send({"tool": 1}, event="tool-call")
        await stream.send("a", event="text-delta")
        await stream.send("b", event="other")
        await stream.send("c", event="other")
        await stream.send(b"raw", event="other")
        await stream.flush()
        async with hub.subscribe("s", batch_replay=True) as events:
            await stream.send("live1", event="other")
            await stream.send("live2", event="other")
            await stream.flush()
            async for event in events:
                received.append(event)
                if event.data == "live2":
                    break
    g = stream.generation
    assert [(e.id, e.event, e.data) for e in received] == [
        (f"{g}-4", "text-delta", "Hello world"),
        (f"{g}-5", "tool-call", {"tool": 1}),
        (f"{g}-6", "text-delta", "a"),
        (f"{g}-8", "other", "bc"),
        (f"{g}-9", "other", b"raw"),
        (f"{g}-10", "other", "live1"),
        (f"{g}-11", "other", "live2"),
    ]


async def test_batch_replay_spans_pages(hub: Hub) -> None:
    count = PAGE_SIZE * 2 + 7
    async with hub.produce("s") as stream:
        for _ in range(count):
            await stream.send("x")
    g = stream.generation
    events, outcome = await collect(hub, "s", batch_replay=True)
    assert [(e.id, e.data) for e in events] == [(f"{g}-{count}", "x" * count)]
    assert outcome.state is State.DONE
    async with hub.subscribe("s", after=f"{g}-5", batch_replay=True) as resumed:
        assert [(e.id, e.data) async for e in resumed] == [(f"{g}-{count}", "x" * (count - 5))]
        assert resumed.last_event_id == f"{g}-{count}"


async def test_slow_subscriber_neither_slows_the_producer_nor_loses_events(
    make_hub: HubFactory,
) -> None:
    total = 5_000
    async with make_hub(buffer_size=16, max_events=total) as hub:
        async with hub.produce("s") as stream:
            await stream.send(0)
            await stream.flush()
            async with hub.subscribe("s") as events:
                first = await events.__anext__()
                # The subscriber stops reading while the producer sends the rest.
                with anyio.fail_after(10):
                    for i in range(1, total):
                        await stream.send(i)
                    await stream.flush()
                assert len(events._buffer) <= PAGE_SIZE  # bounded, whatever the backlog
                rest = []
                async for event in events:
                    rest.append(event)
                    if len(rest) == total - 1:
                        break
        assert [first.data, *texts(rest)] == list(range(total))


# What it checks is the hub's window and the memory backend's log: one Redis
# kind stands for the rest (each full collection walks the worker's heap).
@pytest.mark.parametrize("backend_kind", ["memory", "redis"])
async def test_kept_events_are_left_out_of_garbage_collection(make_hub: HubFactory) -> None:
    """A hub keeps each followed session's newest events, and the memory
    backend its whole log, as columns of plain values: a full collection walks none of
    them, however many replies are live (as objects, 300 replies of 1,500
    events made full passes of 262-353 ms). Objects are built only for
    readers that take events from the window; one keeping up is handed each
    batch instead."""

    def event_objects() -> int:
        gc.collect()
        return sum(isinstance(o, (StoredEvent, Event)) for o in gc.get_objects())

    elsewhere = event_objects()  # other tests' values, alive in this process
    sent: list[object] = []
    received: list[object] = []
    to_test, from_reader = anyio.create_memory_object_stream[object](1000)

    async def read(events: Subscription) -> None:
        async for event in events:
            await to_test.send(event.data)

    # A lease that outlasts the collections below, which hold up the loop
    # for as long as a test worker's whole heap takes to walk.
    async with (
        make_hub(lease_ttl=60.0, retention=60.0) as hub,
        hub.produce("s") as stream,
        hub.subscribe("s") as events,
    ):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(read, events)
            for i in range(200):
                await until_followed(hub, "s")  # a live reader, keeping up
                batch: list[str | bytes | dict[str, int]] = [f"t{i}", str(i).encode(), {"n": i}]
                for data in batch:
                    await stream.send(data)
                await stream.flush()
                received += [await from_reader.receive() for _ in batch]
                sent += batch
            assert received == sent
            feed = events._feed
            assert feed is not None
            assert len(feed._events) == len(sent)  # all of them kept for readers
            del received, sent, batch, data
            gc.collect()
            columns = [part for part in gc.get_referents(feed._events) if isinstance(part, list)]
            kept = [value for column in columns for value in column]
            assert len(kept) == 3 * len(feed._events)  # name, kind, payload
            assert not any(gc.is_tracked(v) for v in kept if not isinstance(v, DataKind))
            # Nor are they kept anywhere else as objects (the memory log).
            assert event_objects() - elsewhere <= 2
            tasks.cancel_scope.cancel()


async def test_leaving_a_subscription_never_affects_the_producer(hub: Hub) -> None:
    async with hub.produce("s") as stream:
        await stream.send("a")
        await stream.flush()
        # break
        async with hub.subscribe("s") as events:
            async for _ in events:
                break
        # cancel while waiting for the next event
        with anyio.move_on_after(0.05):
            async with hub.subscribe("s") as events:
                async for _ in events:
                    pass
        # an exception in the consumer
        with pytest.raises(KeyError):
            async with hub.subscribe("s") as events:
                async for _ in events:
                    raise KeyError("consumer bug")
        await stream.send("b")
    events_, outcome = await collect(hub, "s")
    assert texts(events_) == ["a", "b"]
    assert outcome.state is State.DONE
    assert not stream.cancel_requested


async def test_cancelled_receive_loses_nothing_and_keeps_the_cursor(hub: Hub) -> None:
    async with hub.produce("s") as stream:
        await stream.send("a")
        await stream.flush()
        async with hub.subscribe("s") as events:
            assert (await events.__anext__()).data == "a"
            assert events.last_event_id == f"{stream.generation}-1"
            with anyio.move_on_after(0.05) as waited:
                await events.__anext__()  # nothing to read yet
            assert waited.cancelled_caught
            assert events.last_event_id == f"{stream.generation}-1"
            await stream.send("b")
            with anyio.fail_after(2):
                assert (await events.__anext__()).data == "b"
            assert events.last_event_id == f"{stream.generation}-2"


async def test_batches_deliver_every_event_once_in_order_replay_and_live(hub: Hub) -> None:
    count = PAGE_SIZE * 2 + 11  # a replay of several pages (three)
    live = 1500  # then live batches
    sizes: list[int] = []
    received: list[Event] = []
    async with anyio.create_task_group() as tg, hub.produce("s") as stream:
        for i in range(count):
            await stream.send(i)
        await stream.flush()

        async def reader() -> None:
            async with hub.subscribe("s") as events:
                first = await events.__anext__()  # mixing with plain iteration
                received.append(first)
                async for batch in events.batches():
                    sizes.append(len(batch))
                    received.extend(batch)
                assert events.last_event_id == received[-1].id

        tg.start_soon(reader)
        for i in range(count, count + live):
            await stream.send(i)
            if i % 97 == 0:
                await anyio.sleep(0.01)
    g = stream.generation
    assert [e.id for e in received] == [f"{g}-{seq}" for seq in range(1, count + live + 1)]
    assert texts(received) == list(range(count + live))
    assert all(sizes)
    assert max(sizes) > 1


async def test_live_batch_readers_of_mixed_kinds_get_everything_and_own_their_json(
    hub: Hub,
) -> None:
    # Text and bytes reach every reader as one shared, immutable Event; a
    # JSON value is decoded for each reader, so none can change another's.
    sent: list[object] = []
    got: dict[int, list[Event]] = {}

    async def reader(index: int, *, task_status: TaskStatus[None]) -> None:
        async with hub.subscribe("s") as events:
            task_status.started()
            got[index] = [event async for batch in events.batches() for event in batch]

    async with anyio.create_task_group() as tg, hub.produce("s") as stream:
        for index in range(3):
            await tg.start(reader, index)
        for round_ in range(40):
            for data in (f"t{round_}", {"n": [round_]}, bytes([round_])):
                await stream.send(data)
                sent.append(data)
            if round_ % 7 == 0:
                await stream.flush()
                await anyio.sleep(0.005)
    g = stream.generation
    for received in got.values():
        assert [e.id for e in received] == [f"{g}-{seq}" for seq in range(1, len(sent) + 1)]
        assert texts(received) == sent
    first, second = got[0], got[1]
    assert all(
        a.data is not b.data for a, b in zip(first, second, strict=True) if isinstance(a.data, dict)
    )


async def test_batches_join_replayed_text_when_asked(hub: Hub) -> None:
    async with hub.produce("s") as stream:
        for token in ["a", "b", "c"]:
            await stream.send(token)
    async with hub.subscribe("s", batch_replay=True) as events:
        batches = [[(e.id, e.data) for e in batch] async for batch in events.batches()]
    assert batches == [[(f"{stream.generation}-3", "abc")]]


async def test_a_cancelled_batch_wait_loses_nothing(hub: Hub) -> None:
    async with hub.produce("s") as stream:
        await stream.send("a")
        await stream.flush()
        async with hub.subscribe("s") as events:
            batches = events.batches()
            assert [e.data for e in await batches.__anext__()] == ["a"]
            with anyio.move_on_after(0.05) as waited:
                await batches.__anext__()  # nothing to read yet
            assert waited.cancelled_caught
            await stream.send("b")
            await stream.send("c")
            with anyio.fail_after(2):
                got = [e.data for e in await batches.__anext__()]
                while got != ["b", "c"]:  # the second may come in a batch of its own
                    assert got == ["b"]
                    got += [e.data for e in await batches.__anext__()]
            assert events.last_event_id == f"{stream.generation}-3"


async def test_subscription_to_a_removed_session_ends(hub: Hub) -> None:
    with pytest.raises(LeaseLostError):
        async with hub.produce("s") as stream:
            await stream.send("a")
            await stream.flush()
            with pytest.raises(SessionNotFoundError):
                async with hub.subscribe("s") as events:
                    async for _ in events:
                        await hub.remove("s")
            assert events.outcome is None


async def test_subscription_of_a_replaced_generation_ends_with_its_outcome(hub: Hub) -> None:
    finish, ended = anyio.Event(), anyio.Event()

    async def first_generation(*, task_status: TaskStatus[None]) -> None:
        async with hub.produce("s") as stream:
            await stream.send("a")
            await stream.flush()
            task_status.started()
            await finish.wait()
        ended.set()

    async with anyio.create_task_group() as tg:
        await tg.start(first_generation)
        async with hub.subscribe("s") as events:
            assert (await events.__anext__()).data == "a"
            # The first generation ends and a second begins before we read on.
            finish.set()
            await ended.wait()
            async with hub.produce("s") as second:
                await second.send("new")
            rest = [event async for event in events]
    assert rest == []
    assert events.generation < second.generation
    assert events.outcome is not None
    assert events.outcome.state is State.DONE


async def test_subscriber_on_a_live_session_outlives_idle_periods(make_hub: HubFactory) -> None:
    # A 0.2 s lease lapsed once under two test workers on Redis.
    hub = make_hub(lease_ttl=0.5)
    async with hub, hub.produce("s") as stream, hub.subscribe("s") as events:
        await anyio.sleep(1.2)  # idle for more than two leases: still live
        await stream.send("late")
        with anyio.fail_after(2):
            assert (await events.__anext__()).data == "late"


async def test_subscribers_of_one_session_share_reads(make_hub: HubFactory) -> None:
    wrap = FaultyWrap()

    readers, batches = 50, 20
    received: dict[int, list[object]] = {}

    async def reader(hub: Hub, index: int, *, task_status: TaskStatus[None]) -> None:
        async with hub.subscribe("s") as events:
            task_status.started()
            received[index] = [event.data async for event in events]

    hub = make_hub(wrap=wrap)
    async with hub, anyio.create_task_group() as tg, hub.produce("s") as stream:
        for index in range(readers):
            await tg.start(reader, hub, index)
        reads_before = wrap.backend.reads
        for batch in range(batches):
            await stream.send(batch)
            await stream.flush()
            await anyio.sleep(0.005)
    assert all(data == list(range(batches)) for data in received.values())
    assert len(received) == readers
    shared_reads = wrap.backend.reads - reads_before
    # Unshared, each batch would cost one read per reader: 1,000 reads.
    assert shared_reads < readers + batches * 5, shared_reads


async def test_a_reader_of_a_finished_session_reads_each_page_once_and_no_more(
    make_hub: HubFactory,
) -> None:
    # The read that brings a finished generation's last events also says it
    # ended: ending the iteration needs no further read (a reload after the
    # reply finished is the common case).
    wrap = FaultyWrap()
    count = 2 * PAGE_SIZE + 5
    async with make_hub(wrap=wrap) as hub:
        async with hub.produce("s") as stream:
            for index in range(count):
                await stream.send(index)
        for after, pages in ((None, 3), (f"{stream.generation}-{PAGE_SIZE}", 2)):
            reads_before = wrap.backend.reads
            async with hub.subscribe("s", after=after) as events:
                got = [event.data async for event in events]
                assert events.outcome is not None
                assert events.outcome.state is State.DONE
            assert got == list(range(count - len(got), count))
            assert len(got) == (count if after is None else count - PAGE_SIZE)
            assert wrap.backend.reads - reads_before == pages


async def _stream_to_readers(
    hub: Hub, *, readers: int, batches: int, storage_reads: FaultyWrap | None = None
) -> int:
    """Send ``batches`` one-event batches to ``readers`` live readers; check
    each got all of them in order; return the storage reads made meanwhile."""
    received: dict[int, list[object]] = {}

    async def reader(index: int, *, task_status: TaskStatus[None]) -> None:
        async with hub.subscribe("s") as events:
            task_status.started()
            received[index] = [event.data async for event in events]

    reads_before = 0
    async with anyio.create_task_group() as tg, hub.produce("s") as stream:
        for index in range(readers):
            await tg.start(reader, index)
        if storage_reads is not None:
            reads_before = storage_reads.backend.reads
        for batch in range(batches):
            await stream.send(batch)
            await stream.flush()
            await anyio.sleep(0.002)
        reads = 0 if storage_reads is None else storage_reads.backend.reads - reads_before
    assert len(received) == readers
    assert all(data == list(range(batches)) for data in received.values())
    return reads


async def test_live_readers_take_batches_from_the_notification_not_storage(
    make_hub: HubFactory,
) -> None:
    wrap = FaultyWrap()
    async with make_hub(wrap=wrap) as hub:
        reads = await _stream_to_readers(hub, readers=10, batches=30, storage_reads=wrap)
    # Each batch reaches the feed with its notification; reading it back
    # would cost at least one read per batch.
    assert reads <= 3, reads


async def test_readers_lose_nothing_when_batch_notifications_are_lost(
    make_hub: HubFactory,
) -> None:
    wrap = FaultyWrap()
    hub = make_hub(wrap=wrap)
    wrap.backend.lose_every_nth_batch = 3
    async with hub:
        reads = await _stream_to_readers(hub, readers=5, batches=30, storage_reads=wrap)
    assert reads >= 5, reads  # the lost batches were read from storage instead


async def test_readers_get_everything_from_a_backend_that_hands_nothing_over(
    make_hub: HubFactory,
) -> None:
    wrap = FaultyWrap()
    hub = make_hub(wrap=wrap)
    wrap.backend.hand_over_batches = False
    async with hub:
        await _stream_to_readers(hub, readers=5, batches=30)


async def test_a_follower_that_failed_is_replaced_for_new_subscriptions(
    make_hub: HubFactory,
) -> None:
    wrap = FaultyWrap()
    hub = make_hub(wrap=wrap)
    wrap.backend.hand_over_batches = False  # so the follower reads each batch
    async with hub, hub.produce("s") as stream:
        await stream.send("a")
        await stream.flush()
        async with hub.subscribe("s") as first:
            assert (await first.__anext__()).data == "a"
            wrap.backend.read_error = RuntimeError("a bug in a backend")
            await stream.send("b")
            with anyio.fail_after(5), pytest.raises(BackendUnavailableError, match="a bug"):
                await first.__anext__()
            wrap.backend.read_error = None
            # The first still holds the failed follower; a new one starts.
            with anyio.fail_after(5):
                async with hub.subscribe("s") as second:
                    assert [(await second.__anext__()).data for _ in range(2)] == ["a", "b"]
                    await stream.send("c")
                    assert (await second.__anext__()).data == "c"


async def test_a_reader_behind_the_shared_window_still_gets_everything(
    make_hub: HubFactory,
) -> None:
    total = WINDOW * 3 + 100  # past the window even just before a trim
    async with make_hub(max_events=total) as hub:
        async with anyio.create_task_group() as tg, hub.produce("s") as stream:
            await stream.send(0)
            await stream.flush()
            fast: list[object] = []

            async def keep_up(*, task_status: TaskStatus[None]) -> None:
                async with hub.subscribe("s") as events:
                    task_status.started()
                    async for event in events:
                        fast.append(event.data)

            await tg.start(keep_up)
            async with hub.subscribe("s") as slow_events:
                first = await slow_events.__anext__()
                for i in range(1, total):
                    await stream.send(i)
                    if i % 500 == 0:
                        await stream.flush()
                        await anyio.sleep(0.01)  # the fast reader moves the window on
                await stream.flush()
                slow = [first.data]
                async for event in slow_events:
                    slow.append(event.data)
                    if len(slow) == total:
                        break
    assert slow == list(range(total))
    assert fast == list(range(total))


async def test_a_reader_behind_when_a_new_generation_replaces_the_log_is_told(
    make_hub: HubFactory,
) -> None:
    # Claiming a new generation drops the old log. A reader still replaying
    # the old one must not end with its outcome as if it had read it all.
    async with make_hub() as hub:
        async with hub.produce("s") as stream:
            for index in range(PAGE_SIZE + 100):
                await stream.send(index)
        received = []
        async with hub.subscribe("s") as events:
            received.append((await events.__anext__()).data)  # holds the first page
            async with hub.produce("s") as again:
                await again.send("new")
            missing = f"events {PAGE_SIZE + 1}-{PAGE_SIZE + 100} could be read"
            with pytest.raises(EventsLostError, match=missing):
                async for event in events:
                    received.append(event.data)
        assert received == list(range(PAGE_SIZE))


def followers_of(hub: Hub, session_id: str) -> int:
    """How many readers the session's feed hands batches to (``SessionFeed.attach``)."""
    feed = hub._runtime.feeds._feeds.get(session_id)
    return 0 if feed is None else len(feed._followers)


async def until_followed(hub: Hub, session_id: str, readers: int = 1) -> None:
    """Return once ``readers`` readers wait level with the session's feed."""
    with anyio.fail_after(5):
        while followers_of(hub, session_id) < readers:  # noqa: ASYNC110 - no event tells
            await anyio.sleep(0.001)


class LiveReader:
    """A task reading a session to its end, noting each event as it comes."""

    def __init__(self, hub: Hub, session_id: str) -> None:
        self.hub, self.session_id = hub, session_id
        self.received: list[object] = []
        self.arrived = anyio.Event()
        self.outcome: Outcome | None = None
        self.generation = 0

    async def run(self, *, task_status: TaskStatus[None]) -> None:
        async with self.hub.subscribe(self.session_id) as events:
            task_status.started()
            async for event in events:
                self.received.append(event.data)
                self.arrived.set()
        self.outcome, self.generation = events.outcome, events.generation


async def test_a_reader_that_stops_reading_while_followed_holds_at_most_a_page(
    make_hub: HubFactory,
) -> None:
    # A reader level with the feed is handed each batch; one that stops
    # reading must not collect the rest of the reply in memory.
    total = 3 * PAGE_SIZE
    async with make_hub(max_events=total) as hub, hub.produce("s") as stream:
        async with hub.subscribe("s") as events:
            async with anyio.create_task_group() as tg:
                first: list[Event] = []

                async def read_one() -> None:
                    first.append(await events.__anext__())  # waits level with the feed

                tg.start_soon(read_one)
                await until_followed(hub, "s")
                await stream.send(0)
            assert first[0].data == 0
            for i in range(1, total):
                await stream.send(i)
                if i % 100 == 0:
                    await stream.flush()
                    assert len(events._buffer) <= PAGE_SIZE
            await stream.flush()
            assert len(events._buffer) <= PAGE_SIZE
            rest = []
            with anyio.fail_after(10):
                async for event in events:
                    rest.append(event.data)
                    if len(rest) == total - 1:
                        break
    assert rest == list(range(1, total))


async def test_a_followed_reader_ends_with_its_generation_not_the_next(hub: Hub) -> None:
    reader = LiveReader(hub, "s")
    async with anyio.create_task_group() as tg:
        async with hub.produce("s") as first:
            await tg.start(reader.run)
            await first.send("a")
            with anyio.fail_after(5):
                await reader.arrived.wait()
            await until_followed(hub, "s")
        # Claimed again at once: the follower must see generation 1 end and
        # never be handed generation 2's events.
        async with hub.produce("s") as second:
            await second.send("b")
    assert reader.received == ["a"]
    assert reader.generation == first.generation
    assert reader.outcome is not None
    assert reader.outcome.state is State.DONE


async def test_a_reader_leaving_is_no_longer_handed_batches(hub: Hub) -> None:
    staying = LiveReader(hub, "s")
    async with anyio.create_task_group() as tg, hub.produce("s") as stream:
        await tg.start(staying.run)
        async with hub.subscribe("s") as leaving:
            with anyio.move_on_after(0.2):
                await leaving.__anext__()  # waits level with the feed, until cancelled
            assert followers_of(hub, "s") == 2
        assert followers_of(hub, "s") == 1
        await stream.send(1)
        with anyio.fail_after(5):
            await staying.arrived.wait()
    assert staying.received == [1]


async def test_a_follower_is_never_handed_the_next_generations_events(
    make_hub: HubFactory,
) -> None:
    # The feed reads generation 1's end only after generation 2 has stored
    # an event: that read brings generation 2's events into the window, and
    # the reader following generation 1 must be let go first, not handed them.
    wrap = FaultyWrap()
    async with make_hub(wrap=wrap) as hub, anyio.create_task_group() as tg:
        reader = LiveReader(hub, "s")
        async with hub.produce("s") as first:
            await first.send("a")
            await first.flush()
            await tg.start(reader.run)
            await until_followed(hub, "s")
            gate = wrap.backend.park("read")
        with anyio.fail_after(5):
            await gate.reached.wait()  # the feed's read of generation 1's end
        async with hub.produce("s") as second:
            await second.send("new")
            await second.flush()
        del wrap.backend.gates["read"]
        gate.opened.set()
    assert reader.received == ["a"]
    assert reader.generation == first.generation
    assert reader.outcome is not None
    assert reader.outcome.state is State.DONE
