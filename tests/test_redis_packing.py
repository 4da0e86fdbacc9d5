"""An ended session's log rewritten in large entries (``_packing``): the same
events at every cursor, the log left as written whenever Redis holds
anything but what its producer stored, and readers in the middle of it
served as one atomic read would serve them."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, cast

import anyio
import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from replayhub import Hub, State
from replayhub._events import Cursor, DataKind, StoredEvent
from replayhub.backends.redis import RedisBackend, _packing
from replayhub.backends.redis._keys import decode_columns, encode_batch, session_keys
from replayhub.backends.redis._packing import CopyBudget, LogCopy, Packer, PackJob

from .redis_server import RedisServer, acl_server
from .test_redis_pages import CHANGES, NAMESPACE, SESSION, page

#: Events of a reply as a chat model streams it: text tokens (some not
#: ASCII), a tool call's JSON, raw bytes, names changing now and then.
EVENTS = 2500


def reply_events(count: int = EVENTS, *, first: int = 1) -> list[StoredEvent]:
    events = []
    for seq in range(first, first + count):
        if seq % 400 == 0:
            events.append(StoredEvent(seq, "tool", DataKind.JSON, f'{{"step": {seq}}}'))
        elif seq % 250 == 0:
            events.append(StoredEvent(seq, "audio", DataKind.BYTES, bytes([seq % 256]) * 3))
        else:
            token = f" tok{seq}" + ("é✓" if seq % 7 == 0 else "")
            events.append(StoredEvent(seq, "message", DataKind.TEXT, token))
    return events


async def write_token_by_token(
    backend: RedisBackend,
    events: Sequence[StoredEvent],
    *,
    state: State = State.DONE,
    per_write: int = 1,
) -> int:
    """A session whose events were stored ``per_write`` a write, ended in
    ``state``; its generation."""
    record = await backend.claim(SESSION, metadata={"m": 1}, lease_ttl=30, retention=60)
    for start in range(0, len(events), per_write):
        batch = events[start : start + per_write]
        await backend.append(SESSION, record.generation, batch, metadata=None)
    await backend.finish(
        SESSION,
        record.generation,
        state=state,
        error="boom" if state is State.FAILED else None,
        error_type=None,
        retention=60,
    )
    return record.generation


def log_entries(server: RedisServer) -> int:
    return int(server.command("XLEN", session_keys(NAMESPACE, SESSION).log))


def log_dump(server: RedisServer) -> bytes:
    return server.command("XRANGE", session_keys(NAMESPACE, SESSION).log, "-", "+")


async def wait_for_entries(server: RedisServer, entries: int) -> None:
    with anyio.fail_after(5):
        while log_entries(server) != entries:  # noqa: ASYNC110 - no event tells
            await anyio.sleep(0.01)


#: What the backend's packer does with a job, before a test holds them.
SUBMIT = Packer.submit


def add(copy: LogCopy, events: Sequence[StoredEvent]) -> None:
    """Copy ``events`` as the backend does once they are stored."""
    copy.add(events, encode_batch(events))


@pytest.fixture
def held_jobs(monkeypatch: pytest.MonkeyPatch) -> list[PackJob]:
    """The rewrites backends ask for, held here instead of run, so the test
    runs each one when it chooses (``RedisBackend._pack``)."""
    jobs: list[PackJob] = []
    monkeypatch.setattr(Packer, "submit", lambda self, job: jobs.append(job))
    return jobs


# -- the copy a producer keeps ----------------------------------------------------------------

event_kinds = st.sampled_from([DataKind.TEXT, DataKind.BYTES, DataKind.JSON])


@st.composite
def write_batches(draw: st.DrawFn) -> list[list[StoredEvent]]:
    """Batches as producers write them: mostly one event, some long, of a
    few names and every kind, payloads empty to long, not all ASCII."""
    batches: list[list[StoredEvent]] = []
    seq = 1
    sizes = st.sampled_from([1, 1, 1, 2, 7, 40, _packing.KEPT_WHOLE, 100])
    for size in draw(st.lists(sizes, min_size=1, max_size=60)):
        batch = []
        for _ in range(size):
            kind = draw(event_kinds)
            name = draw(st.sampled_from(["message", "tool", "ünï"]))
            text = draw(st.text(max_size=30))
            payload: str | bytes = text.encode() if kind is DataKind.BYTES else text
            batch.append(StoredEvent(seq, name, kind, payload))
            seq += 1
        batches.append(batch)
    return batches


@settings(max_examples=100, deadline=None)
@given(
    write_batches(),
    st.sampled_from([1, 3, 16, 1024]),
    st.sampled_from([1, 20, 200, 32 * 1024]),
)
def test_a_copy_packs_the_events_it_was_given_in_order(
    batches: list[list[StoredEvent]], most_events: int, most_bytes: int
) -> None:
    """The packed entries hold every event once, in order, each entry
    within its limits (a new one begins once an entry holds ``most_events``
    events or ``most_bytes`` bytes of payloads, batches of ``KEPT_WHOLE``
    events or more stay as written), ids ending on each one's last event,
    and read back as the batches themselves do."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_packing, "PACKED_EVENTS", most_events)
        patch.setattr(_packing, "PACKED_BYTES", most_bytes)
        copy = LogCopy(CopyBudget())
        for batch in batches:
            add(copy, batch)
        entries = anyio.run(copy.packed_entries)
    events = [event for batch in batches for event in batch]
    assert (copy.entries, copy.first_entry, copy.next_seq) == (
        len(batches),
        batches[0][-1].seq,
        len(events) + 1,
    )
    raw = [(f"1-{last}".encode(), [b"b", value]) for last, value in entries]
    assert [last for last, _ in entries] == sorted({last for last, _ in entries})
    assert entries[-1][0] == len(events)
    unpacked = decode_columns(raw, after_seq=0, limit=None).unpack(0, len(events), share=None)
    assert unpacked == events
    written = [(f"1-{b[-1].seq}".encode(), [b"b", encode_batch(b)]) for b in batches]
    assert decode_columns(written, after_seq=0, limit=None).unpack(0, len(events), share=None) == (
        unpacked
    )
    # A stored batch of KEPT_WHOLE events or more is an entry as written.
    kept_whole = {
        (batch[-1].seq, encode_batch(batch))
        for batch in batches
        if len(batch) >= _packing.KEPT_WHOLE
    }
    assert kept_whole <= set(entries)
    previous = 0
    for last, value in entries:
        count = last - previous
        previous = last
        if (last, value) in kept_whole:
            continue
        # A stored value is merged whole: past a limit by less than one value.
        assert count < most_events + 40
        body = value.partition(b"\n")[2]
        assert len(body) < most_bytes + 40 * 30 * 4


def test_a_batch_packs_as_encode_batch_writes_it() -> None:
    events = reply_events(600)
    copy = LogCopy(CopyBudget())
    add(copy, events)
    assert anyio.run(copy.packed_entries) == [(600, encode_batch(events))]


def test_a_copy_ignores_a_batch_sent_again_and_drops_on_anything_unexpected() -> None:
    events = reply_events(100)
    copy = LogCopy(CopyBudget())
    for event in events[:50]:
        add(copy, [event])
    add(copy, [events[49]])  # a retried write the log already held: not stored again
    add(copy, events[10:20])
    assert (copy.entries, copy.next_seq) == (50, 51)
    add(copy, events[51:52])  # event 51 never reported stored: the copy is unsure
    assert copy.dropped
    assert not copy.worth_packing()
    add(copy, events[50:51])
    assert copy.dropped


def test_a_copy_past_its_size_is_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_packing, "COPY_AT_MOST", 10_000)
    copy = LogCopy(CopyBudget())
    for event in reply_events(2000):
        add(copy, [event])
    assert copy.dropped
    assert anyio.run(copy.packed_entries) == []


def test_copies_past_their_shared_budget_are_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    """A backend's copies share one budget: the copy whose next value would
    go past it is dropped, the others kept; bytes given back are free again."""
    events = reply_events(1000)
    one_copy = sum(len(encode_batch([event])) for event in events)
    monkeypatch.setattr(_packing, "COPIES_AT_MOST", one_copy + one_copy // 2)
    budget = CopyBudget()
    first, second = LogCopy(budget), LogCopy(budget)
    for event in events:
        add(first, [event])
        add(second, [event])
    assert not first.dropped
    assert second.dropped  # its values went past the budget half-way
    assert budget.used == one_copy
    first.release()
    assert budget.used == 0
    third = LogCopy(budget)
    for event in events:
        add(third, [event])
    assert not third.dropped
    assert budget.used == one_copy


def test_short_or_already_batched_logs_are_not_worth_rewriting() -> None:
    events = reply_events(5000)
    short, batched, chatty = LogCopy(CopyBudget()), LogCopy(CopyBudget()), LogCopy(CopyBudget())
    for event in events[:63]:
        add(short, [event])
    for start in range(0, 5000, 100):
        add(batched, events[start : start + 100])
    for event in events[:64]:
        add(chatty, [event])
    assert not short.worth_packing()
    assert not batched.worth_packing()  # 50 entries of 100 events
    assert chatty.worth_packing()


# -- the rewrite in Redis --------------------------------------------------------------------


@pytest.mark.usefixtures("redis_driver")
@pytest.mark.parametrize("state", [State.DONE, State.FAILED, State.CANCELLED])
async def test_a_reply_stored_token_by_token_is_rewritten_and_reads_the_same(
    fresh_redis: RedisServer, state: State
) -> None:
    """Once the session has ended, its log of 2,500 one-event entries is
    three entries (1,024 events each at most), expiring with the session;
    every cursor and page size reads exactly the events stored, from a
    backend that read it before and one that never did."""
    events = reply_events()
    async with (
        RedisBackend(fresh_redis.url, namespace=NAMESPACE) as producer,
        RedisBackend(fresh_redis.url, namespace=NAMESPACE) as early_reader,
    ):
        generation = await write_token_by_token(producer, events[:10], state=State.DONE)
        # A generation before: its copy is not the next one's.
        await early_reader.read_events(SESSION, after=None, limit=100)
        generation = await write_token_by_token(producer, events, state=state)
        await early_reader.read_events(SESSION, after=None, limit=100)
        await wait_for_entries(fresh_redis, 3)
        keys = session_keys(NAMESPACE, SESSION)
        log_ttl = int(fresh_redis.command("PTTL", keys.log))
        assert 55_000 < log_ttl <= int(fresh_redis.command("PTTL", keys.session)) + 50
        expected = [event.to_event(generation) for event in events]
        async with RedisBackend(fresh_redis.url, namespace=NAMESPACE) as late_reader:
            for reader in (early_reader, late_reader):
                for after in (None, 0, 1, 1023, 1024, 1025, 2047, 2048, 2499, 2500):
                    cursor = None if after is None else Cursor(generation, after)
                    start = after or 0
                    for limit in (1, 7, 1024, 3072):
                        found = await reader.read_events(SESSION, after=cursor, limit=limit)
                        assert found is not None
                        record, got = found
                        assert (record.state, record.last_seq) == (state, EVENTS)
                        assert got == expected[start : start + limit], (after, limit)


@pytest.mark.usefixtures("redis_driver")
async def test_a_hub_closed_as_its_last_reply_ends_still_rewrites_it(
    fresh_redis: RedisServer,
) -> None:
    """A worker that stops right after its last reply: the rewrite queued
    at the end runs before its hub has closed."""
    async with Hub(RedisBackend(fresh_redis.url, namespace=NAMESPACE)) as hub:
        async with hub.produce(SESSION) as stream:
            for index in range(300):
                await stream.send(f" t{index}")
                await stream.flush()
    assert log_entries(fresh_redis) == 1
    async with (
        Hub(RedisBackend(fresh_redis.url, namespace=NAMESPACE)) as hub,
        hub.subscribe(SESSION) as events,
    ):
        assert [event.data async for event in events] == [f" t{index}" for index in range(300)]


@pytest.mark.usefixtures("redis_driver")
async def test_a_hub_whose_redis_died_closes_without_waiting_on_its_rewrites(
    fresh_redis: RedisServer, held_jobs: list[PackJob]
) -> None:
    """Redis gone between a reply's end and its rewrite: closing the hub
    gives the queued rewrite its second, then drops it (the log, wherever
    it is, stays as written)."""
    backend = RedisBackend(fresh_redis.url, namespace=NAMESPACE)
    with anyio.fail_after(10):
        async with backend:
            await write_token_by_token(backend, reply_events(300))
            (job,) = held_jobs
            fresh_redis.kill()
            assert backend._packer is not None
            SUBMIT(backend._packer, job)
            closing = anyio.current_time()
        assert anyio.current_time() - closing < 5


@pytest.mark.usefixtures("redis_driver")
async def test_a_rewrite_that_breaks_is_logged_and_the_hub_keeps_serving(
    fresh_redis: RedisServer, held_jobs: list[PackJob], caplog: pytest.LogCaptureFixture
) -> None:
    """Whatever goes wrong inside a rewrite (here a copy made unreadable
    behind the backend's back) is logged; the log stays as written and the
    backend, its packer included, goes on."""
    caplog.set_level(logging.ERROR, logger="replayhub.backends.redis._packing")
    events = reply_events(300)
    async with RedisBackend(fresh_redis.url, namespace=NAMESPACE) as backend:
        generation = await write_token_by_token(backend, events)
        (job,) = held_jobs
        job.copy._values[5] = b"not a stored value"
        before = log_dump(fresh_redis)
        assert backend._packer is not None
        SUBMIT(backend._packer, job)
        with anyio.fail_after(5):
            while not caplog.records:  # noqa: ASYNC110 - the log is what tells
                await anyio.sleep(0.01)
        assert "rewriting the log of session 's' failed" in caplog.records[0].getMessage()
        assert log_dump(fresh_redis) == before
        found = await backend.read_events(SESSION, after=None, limit=3072)
        assert found is not None
        assert found[1] == [event.to_event(generation) for event in events]
        # The packer still runs: the next ended reply is rewritten.
        held_jobs.clear()
        await write_token_by_token(backend, events)
        (job,) = held_jobs
        SUBMIT(backend._packer, job)
        await wait_for_entries(fresh_redis, 1)


@pytest.mark.usefixtures("redis_driver")
@pytest.mark.parametrize("make_change", CHANGES)
async def test_a_log_changed_before_its_rewrite_is_left_as_it_is(
    fresh_redis: RedisServer, make_change: Any, held_jobs: list[PackJob]
) -> None:
    """Between a session's end and its rewrite, the session changes (claimed
    again, removed, entries or keys lost, expired): the rewrite writes
    nothing, and readers read what they read before it."""
    async with (
        RedisBackend(fresh_redis.url, namespace=NAMESPACE) as producer,
        RedisBackend(fresh_redis.url, namespace=NAMESPACE) as other,
    ):
        generation = await write_token_by_token(producer, reply_events(1000))
        (job,) = held_jobs
        await make_change(fresh_redis, other)()
        before = log_dump(fresh_redis)
        cursors = [None, Cursor(generation, 0), Cursor(generation, 299), Cursor(generation, 700)]
        async with RedisBackend(fresh_redis.url, namespace=NAMESPACE) as reader:
            pages = [await page(reader, cursor, 230) for cursor in cursors]
        await producer._pack(job)
        assert log_dump(fresh_redis) == before
        async with RedisBackend(fresh_redis.url, namespace=NAMESPACE) as reader:
            assert [await page(reader, cursor, 230) for cursor in cursors] == pages


@pytest.mark.usefixtures("redis_driver")
async def test_the_rewrite_runs_on_the_unchanged_log(
    fresh_redis: RedisServer, held_jobs: list[PackJob]
) -> None:
    """The control of the test above: the held rewrite, run, rewrites."""
    async with RedisBackend(fresh_redis.url, namespace=NAMESPACE) as producer:
        await write_token_by_token(producer, reply_events(1000))
        (job,) = held_jobs
        await producer._pack(job)
        assert log_entries(fresh_redis) == 1


@pytest.mark.usefixtures("redis_driver")
async def test_a_reader_paging_through_the_rewrite_reads_every_event_once(
    fresh_redis: RedisServer, held_jobs: list[PackJob]
) -> None:
    """A reader has read pages of the log as written; it is rewritten; the
    reader's next pages come from the new entries, which begin before its
    cursor: every event once, in order."""
    events = reply_events()
    async with (
        RedisBackend(fresh_redis.url, namespace=NAMESPACE) as producer,
        RedisBackend(fresh_redis.url, namespace=NAMESPACE) as reader,
    ):
        generation = await write_token_by_token(producer, events)
        (job,) = held_jobs
        got: list[Any] = []
        while len(got) < EVENTS:
            if len(got) == 3 * 333:
                await producer._pack(job)
                assert log_entries(fresh_redis) == 3
            found = await reader.read_events(SESSION, after=Cursor(generation, len(got)), limit=333)
            assert found is not None
            got += found[1]
        assert got == [event.to_event(generation) for event in events]


@pytest.mark.usefixtures("redis_driver")
async def test_a_page_read_across_the_rewrite_is_read_again_by_the_script(
    fresh_redis: RedisServer, held_jobs: list[PackJob], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A page's entries and the entry after them are two commands: the log
    rewritten between them answers the first from its old entries (three
    events each: the page's last is in the next one) and the second from a
    new one that repeats events. The page is read again, by the read
    script, neither served nor refused as a broken log."""
    events = reply_events()
    async with (
        RedisBackend(fresh_redis.url, namespace=NAMESPACE) as producer,
        RedisBackend(fresh_redis.url, namespace=NAMESPACE) as reader,
    ):
        generation = await write_token_by_token(producer, events, per_write=3)
        (job,) = held_jobs
        first = await reader.read_events(SESSION, after=None, limit=100)  # now known ended
        assert first is not None
        driver = reader._require_driver()
        read_log = driver.read_log
        torn = 0

        async def read_log_torn_by_the_rewrite(*args: Any) -> Any:
            nonlocal torn
            fields, (entries, _) = await read_log(*args)
            if torn == 0:
                await producer._pack(job)
            torn += 1
            _, (_, straddling) = await read_log(*args)
            return fields, (entries, straddling)

        monkeypatch.setattr(driver, "read_log", read_log_torn_by_the_rewrite)
        calls = fresh_redis.calls("evalsha")
        found = await reader.read_events(SESSION, after=Cursor(generation, 100), limit=1000)
        assert found is not None
        assert found[1] == [event.to_event(generation) for event in events[100:1100]]
        assert fresh_redis.calls("evalsha") > calls  # the script read it
        assert log_entries(fresh_redis) == 3


@pytest.mark.usefixtures("redis_driver")
async def test_a_producer_that_lost_its_session_rewrites_nothing(
    fresh_redis: RedisServer, held_jobs: list[PackJob]
) -> None:
    async with RedisBackend(fresh_redis.url, namespace=NAMESPACE) as producer:
        record = await producer.claim(SESSION, metadata={}, lease_ttl=30, retention=60)
        for event in reply_events(100):
            await producer.append(SESSION, record.generation, [event], metadata=None)
        await producer.remove(SESSION)
        with pytest.raises(Exception, match="removed"):
            await producer.finish(
                SESSION, record.generation, state=State.DONE, error=None, error_type=None,
                retention=60,
            )  # fmt: skip
        producer.release(SESSION, record.generation)
        assert held_jobs == []
        assert producer._copies == {}


async def test_a_rewrite_redis_refuses_is_logged_and_the_log_kept(
    tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """An ACL user set up before the rewrite existed (no ``XLEN``): Redis
    refuses the script; the refusal is logged and the log reads as written."""
    server = acl_server(tmp_path, omit=("+xlen",)).start()
    try:
        url = f"redis://app:app-secret@127.0.0.1:{server.port}/0"
        caplog.set_level(logging.WARNING, logger="replayhub.backends.redis._backend")
        async with Hub(RedisBackend(url, namespace="app")) as hub:
            async with hub.produce(SESSION) as stream:
                for index in range(100):
                    await stream.send(f" t{index}")
                    await stream.flush()
        (message,) = [r.getMessage() for r in caplog.records if "rewrite" in r.getMessage()]
        assert "can't run this command" in message
        async with Hub(RedisBackend(url, namespace="app")) as hub:
            async with hub.subscribe(SESSION) as events:
                assert [e.data async for e in events] == [f" t{index}" for index in range(100)]
        client = redis.Redis(port=server.port, username="app", password="app-secret")
        log = session_keys("app", SESSION).log
        assert len(cast(list[Any], client.xrange(log))) == 100
        client.close()
    finally:
        server.stop()


async def test_the_documented_acl_user_may_rewrite(redis_acl_url: str) -> None:
    namespace = "t-packing-acl"
    async with Hub(RedisBackend(redis_acl_url, namespace=namespace)) as hub:
        async with hub.produce(SESSION) as stream:
            for index in range(100):
                await stream.send(f" t{index}")
                await stream.flush()
    client = redis.Redis.from_url(redis_acl_url.partition("?")[0])
    try:
        assert client.xlen(session_keys(namespace, SESSION).log) == 1
    finally:
        client.close()


def cluster_log_entries(url: str, namespace: str) -> int:
    first = url.partition("://")[2].partition(",")[0]
    host, _, port = first.partition(":")
    client = redis.RedisCluster(host=host, port=int(port))
    try:
        return int(client.xlen(session_keys(namespace, SESSION).log))
    finally:
        client.close()


@pytest.mark.parametrize("backend_kind", ["redis-cluster", "redis-py-cluster"])
async def test_a_reply_on_a_cluster_is_rewritten_on_its_node(
    backend_kind: str, backend_servers: Any
) -> None:
    namespace = f"packing-{backend_kind}"
    backend = backend_servers.backend(backend_kind, namespace=namespace)
    url = backend_servers.url_of(backend_kind)
    events = reply_events(1500)
    async with backend:
        generation = await write_token_by_token(backend, events)
    assert cluster_log_entries(url, namespace) == 2
    async with backend_servers.backend(backend_kind, namespace=namespace) as reader:
        found = await reader.read_events(SESSION, after=Cursor(generation, 1000), limit=3072)
        assert found is not None
        assert found[1] == [event.to_event(generation) for event in events[1000:]]
