"""Pages of a finished session after the first: read without the read script
(``RedisBackend._read_finished_page``), yet exactly what the script reads,
whatever changes between two pages."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import anyio
import pytest

from replayhub import State
from replayhub._events import Cursor, DataKind, StoredEvent
from replayhub.backends.redis import RedisBackend
from replayhub.backends.redis._keys import session_keys

from .redis_server import RedisServer

pytestmark = pytest.mark.usefixtures("redis_driver")

NAMESPACE = "pages"
SESSION = "s"
#: Ten write batches of 100 events: log entries <generation>-100 ... -1000.
BATCHES, BATCH = 10, 100


async def finished_session(backend: RedisBackend) -> int:
    """A session of ``BATCHES`` stored batches, finished; its generation."""
    record = await backend.claim(SESSION, metadata={"m": 1}, lease_ttl=30, retention=60)
    for first in range(1, BATCHES * BATCH, BATCH):
        batch = [
            StoredEvent(seq, "message", DataKind.TEXT, f"e{seq}")
            for seq in range(first, first + BATCH)
        ]
        await backend.append(SESSION, record.generation, batch, metadata=None)
    await backend.finish(
        SESSION, record.generation, state=State.DONE, error=None, error_type=None, retention=60
    )
    return record.generation


async def page(backend: RedisBackend, after: Cursor | None, limit: int) -> Any:
    """What a page read gives, comparably: ``None``, the error's class, or
    the record (its lease left out: a clock reading) and the events."""
    try:
        found = await backend.read_events(SESSION, after=after, limit=limit)
    except Exception as exc:
        return type(exc)
    if found is None:
        return None
    record, events = found
    return replace(record, lease_remaining=None), events


async def read_page_after_page(backend: RedisBackend, server: RedisServer | None) -> None:
    """Writes a finished session through ``backend`` (on ``server``, a
    server of the test's own, or ``None`` for a shared one), then reads it
    back a page at a time, twice: every event once each time, and one read
    script in all, for the first page, which hands the page off to the
    backend (and after it the backend knows the session finished)."""
    generation = await finished_session(backend)
    await backend.head("absent")  # the read script loaded (its first call is refused)
    calls = 0 if server is None else server.calls("evalsha")
    ranges = 0 if server is None else server.calls("xrange")
    for _ in range(2):
        texts: list[Any] = []
        after = None
        while len(texts) < BATCHES * BATCH:
            found = await backend.read_events(SESSION, after=after, limit=230)
            assert found is not None
            record, events = found
            assert record.state is State.DONE
            assert record.metadata == {"m": 1}
            texts += [event.data for event in events]
            after = Cursor(generation, len(texts))
        assert texts == [f"e{seq}" for seq in range(1, BATCHES * BATCH + 1)]
    # Ten pages (230 events each, every fifth 80), one read script, which
    # read no entry (it handed the first page off): two XRANGEs a page.
    assert server is None or server.calls("evalsha") - calls == 1
    assert server is None or server.calls("xrange") - ranges == 2 * 10


async def test_later_pages_of_a_finished_session_skip_the_read_script(
    fresh_redis: RedisServer,
) -> None:
    async with RedisBackend(fresh_redis.url, namespace=NAMESPACE) as backend:
        await read_page_after_page(backend, fresh_redis)


def claim_again(server: RedisServer, backend: RedisBackend) -> Any:
    async def change() -> None:
        await backend.claim(SESSION, metadata={}, lease_ttl=30, retention=60)

    return change


def claim_again_and_write(server: RedisServer, backend: RedisBackend) -> Any:
    async def change() -> None:
        record = await backend.claim(SESSION, metadata={}, lease_ttl=30, retention=60)
        batch = [StoredEvent(seq, "message", DataKind.TEXT, f"n{seq}") for seq in range(1, 601)]
        await backend.append(SESSION, record.generation, batch, metadata=None)
        await backend.finish(
            SESSION, record.generation, state=State.DONE, error=None, error_type=None, retention=60
        )

    return change


def remove(server: RedisServer, backend: RedisBackend) -> Any:
    async def change() -> None:
        await backend.remove(SESSION)

    return change


def delete_entries(*ends: int, log_too: bool = False) -> Any:
    """Entries of the log deleted behind the backend's back (as eviction or
    another client would), or the whole log."""

    def make(server: RedisServer, backend: RedisBackend) -> Any:
        async def change() -> None:
            record = await backend.head(SESSION)
            assert record is not None
            log = session_keys(NAMESPACE, SESSION).log
            if log_too:
                server.command("DEL", log)
            for end in ends:
                server.command("XDEL", log, f"{record.generation}-{end}")

        return change

    return make


def change_hash(*command: str) -> Any:
    """The session's hash changed behind the backend's back, its log kept
    (keys expire one at a time; another client)."""

    def make(server: RedisServer, backend: RedisBackend) -> Any:
        async def change() -> None:
            record = await backend.head(SESSION)
            assert record is not None
            values = [str(record.generation + 1) if part == "{next}" else part for part in command]
            server.command(values[0], session_keys(NAMESPACE, SESSION).session, *values[1:])

        return change

    return make


def expire(server: RedisServer, backend: RedisBackend) -> Any:
    async def change() -> None:
        keys = session_keys(NAMESPACE, SESSION)
        server.command("PEXPIRE", keys.session, "1")
        server.command("PEXPIRE", keys.log, "1")
        await anyio.sleep(0.05)

    return change


#: Each way a session can change between two reads, named.
CHANGES = [
    pytest.param(claim_again, id="claimed-again"),
    pytest.param(claim_again_and_write, id="claimed-again-and-written"),
    pytest.param(remove, id="removed"),
    pytest.param(delete_entries(log_too=True), id="log-lost"),
    # the first entry of the next page; the entry holding its last event;
    # the log's last entry
    pytest.param(delete_entries(300), id="page-head-lost"),
    pytest.param(delete_entries(500), id="page-tail-lost"),
    pytest.param(delete_entries(1000), id="log-tail-lost"),
    pytest.param(change_hash("DEL"), id="hash-lost"),
    pytest.param(change_hash("HSET", "g", "{next}"), id="hash-of-another-generation"),
    pytest.param(expire, id="expired"),
]


@pytest.mark.parametrize("make_change", CHANGES)
async def test_a_session_changed_between_pages_reads_as_one_atomic_read_would(
    fresh_redis: RedisServer, make_change: Any
) -> None:
    """The reader read a page of a finished session; then the session
    changes; its next page is what a reader that never read it (read
    script, one snapshot) gets at the same cursor."""
    async with (
        RedisBackend(fresh_redis.url, namespace=NAMESPACE) as reader,
        RedisBackend(fresh_redis.url, namespace=NAMESPACE) as other,
    ):
        generation = await finished_session(other)
        first = await reader.read_events(SESSION, after=None, limit=230)
        assert first is not None
        assert len(first[1]) == 230
        await make_change(fresh_redis, other)()
        cursors: list[Cursor | None] = [Cursor(generation, after) for after in (230, 460, 920)]
        # None and an earlier generation's cursor: from the start.
        cursors += [None, Cursor(generation - 1, 5)]
        for cursor in cursors:
            again = await page(reader, cursor, 230)
            # A backend of its own each time: none has read the session before.
            async with RedisBackend(fresh_redis.url, namespace=NAMESPACE) as fresh:
                assert again == await page(fresh, cursor, 230), cursor


@pytest.mark.parametrize("make_change", CHANGES)
async def test_a_session_changed_right_after_the_read_script_handed_off_reads_as_one_snapshot(
    fresh_redis: RedisServer, make_change: Any
) -> None:
    """The read script read the session's record and left its page to the
    backend; the session changes before the backend reads it: the page is
    what one atomic read gets, either before the change (as of the record:
    its events are still there) or after it (they are gone: read again)."""
    async with (
        RedisBackend(fresh_redis.url, namespace=NAMESPACE) as reader,
        RedisBackend(fresh_redis.url, namespace=NAMESPACE) as other,
    ):
        generation = await finished_session(other)
        async with RedisBackend(fresh_redis.url, namespace=NAMESPACE) as fresh:
            before = await page(fresh, Cursor(generation, 230), 230)
        driver: Any = reader._driver
        read_log = driver.read_log
        change = make_change(fresh_redis, other)

        async def changed_first(*args: Any) -> Any:
            driver.read_log = read_log  # once
            await change()
            return await read_log(*args)

        driver.read_log = changed_first
        again = await page(reader, Cursor(generation, 230), 230)
        assert driver.read_log is read_log  # the page was handed off
        async with RedisBackend(fresh_redis.url, namespace=NAMESPACE) as fresh:
            after = await page(fresh, Cursor(generation, 230), 230)
        assert again in (before, after)
        if again != after:  # only where the events read are still stored
            log = session_keys(NAMESPACE, SESSION).log
            assert fresh_redis.command("XRANGE", log, f"{generation}-231", f"{generation}-300")


async def test_a_long_page_of_a_live_session_is_read_as_of_the_read_script(
    fresh_redis: RedisServer,
) -> None:
    """A reader catching up on a live reply: the script reads the record and
    hands the page off; events stored after the script ran are not part of
    the page (the record does not count them yet), and a short catch-up is
    read by the script itself, entries and all."""
    async with (
        RedisBackend(fresh_redis.url, namespace=NAMESPACE) as reader,
        RedisBackend(fresh_redis.url, namespace=NAMESPACE) as producer,
    ):
        await reader.head("absent")  # the read script loaded
        record = await producer.claim(SESSION, metadata={}, lease_ttl=30, retention=60)
        generation = record.generation
        for seq in range(1, 1001):
            batch = [StoredEvent(seq, "message", DataKind.TEXT, f"e{seq}")]
            await producer.append(SESSION, generation, batch, metadata=None)
        driver: Any = reader._driver
        read_log = driver.read_log

        async def more_stored_first(*args: Any) -> Any:
            driver.read_log = read_log  # once
            batch = [StoredEvent(seq, "message", DataKind.TEXT, f"e{seq}") for seq in (1001, 1002)]
            await producer.append(SESSION, generation, batch, metadata=None)
            return await read_log(*args)

        driver.read_log = more_stored_first
        ranges = fresh_redis.calls("xrange")
        found = await reader.read_events(SESSION, after=Cursor(generation, 900), limit=230)
        assert driver.read_log is read_log  # handed off
        assert found is not None
        page_record, events = found
        assert (page_record.state, page_record.last_seq) == (State.LIVE, 1000)
        assert [event.data for event in events] == [f"e{seq}" for seq in range(901, 1001)]
        assert fresh_redis.calls("xrange") - ranges == 2  # the client's; none in Lua
        # A catch-up of fewer events than a hand-off is worth: in the script.
        found = await reader.read_events(SESSION, after=Cursor(generation, 990), limit=230)
        assert found is not None
        assert [event.data for event in found[1]] == [f"e{seq}" for seq in range(991, 1003)]
        assert fresh_redis.calls("xrange") - ranges == 3


async def test_a_reader_that_saw_its_session_finished_still_reads_it_whole_later(
    fresh_redis: RedisServer,
) -> None:
    """A session read finished, then claimed again and finished anew: a
    page read with a cursor of the new generation is of the new one."""
    async with RedisBackend(fresh_redis.url, namespace=NAMESPACE) as backend:
        old = await finished_session(backend)
        assert await backend.read_events(SESSION, after=Cursor(old, 0), limit=230) is not None
        await claim_again_and_write(fresh_redis, backend)()
        record = await backend.head(SESSION)
        assert record is not None
        assert record.generation > old
        found = await backend.read_events(SESSION, after=Cursor(record.generation, 10), limit=5)
        assert found is not None
        assert [event.data for event in found[1]] == [f"n{seq}" for seq in range(11, 16)]
        found = await backend.read_events(SESSION, after=Cursor(old, 230), limit=5)
        assert found is not None  # an old generation's cursor reads the new one from its start
        assert [event.data for event in found[1]] == [f"n{seq}" for seq in range(1, 6)]
