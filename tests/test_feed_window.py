"""The feed's window of a session's newest events, as readers take them.

The window keeps events packed and builds objects only for readers that take
them from it (readers that are handed each batch need none): whatever the mix
of the two over time, and across trims, a take must return exactly the events
after the cursor, in order, as each was stored.
"""

from __future__ import annotations

from collections import deque
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replayhub import _feed
from replayhub._events import DataKind, Event, State, StoredEvent
from replayhub._feed import WINDOW, SessionFeed
from replayhub._recheck import RecheckTimer
from replayhub.backends import SessionRecord

GENERATION = 3


def stored(seq: int) -> StoredEvent:
    kind = (DataKind.TEXT, DataKind.BYTES, DataKind.JSON)[seq % 3]
    payload: str | bytes
    if kind is DataKind.BYTES:
        payload = f"b{seq}".encode()
    else:
        payload = f"t{seq}" if kind is DataKind.TEXT else f'{{"n": {seq}}}'
    return StoredEvent(seq, f"e{seq % 2}", kind, payload)


def expected(seq: int) -> Event:
    return stored(seq).to_event(GENERATION)


def record(last_seq: int) -> SessionRecord:
    return SessionRecord("s", GENERATION, State.LIVE, last_seq, {}, None, 0.0, 0.0, 30.0)


def window_feed() -> SessionFeed:
    feed = SessionFeed(
        cast(Any, None), "s", page_size=WINDOW, lease_ttl=30.0, rechecks=RecheckTimer()
    )
    feed._record = record(0)
    feed._last_seq = 0
    return feed


class _Follower:
    def pushed(self, events: list[StoredEvent], shared: list[Event] | None) -> bool:
        return True

    def released(self) -> None:
        pass

    def wake(self) -> None:
        pass


@settings(max_examples=25, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.integers(min_value=1, max_value=700),  # batch size
            st.booleans(),  # whether a reader takes from the window meanwhile
            st.integers(min_value=0, max_value=10_000),  # where it takes from
        ),
        min_size=1,
        max_size=14,
    )
)
def test_takes_from_the_window_return_exactly_the_events_after_the_cursor(
    steps: list[tuple[int, bool, int]],
) -> None:
    feed = window_feed()
    follower = _Follower()
    feed.users = 2
    last = 0
    for size, taker, offset in steps:
        # With a taker, the batch is built as it comes; without one, every
        # reader is handed it and nothing is built until someone takes it.
        feed._followers = {} if taker else {follower: (deque(), follower.wake)}
        if not taker:
            feed.users = 1
        batch = [stored(seq) for seq in range(last + 1, last + size + 1)]
        feed._extend(GENERATION, batch)
        last += size
        feed._record = record(last)
        feed.users = 2
        kept = len(feed._events)
        assert WINDOW <= kept <= 2 * WINDOW or kept == last
        after = last - kept + offset % (kept + 1)  # a cursor inside the window
        taken = feed.take_events(GENERATION, after)
        want = [expected(seq) for seq in range(after + 1, min(last, after + WINDOW) + 1)]
        assert taken == want
        result = feed.read(GENERATION, after)
        if after < last:
            assert result is not None
            assert [event.to_event(GENERATION) for event in result[1]] == want
    # Older than the window: not taken from it.
    if last > len(feed._events):
        assert feed.take_events(GENERATION, last - len(feed._events) - 1) == []


class _Recorder:
    """A follower that keeps what it is handed, as a subscription does (in
    its buffer), and a watch that counts wake-ups."""

    def __init__(self) -> None:
        self.buffer: deque[Event] = deque()
        self.wakes = 0
        self.released_after: int | None = None  # the seq it was let go after
        self.notified = 0

    @property
    def seqs(self) -> list[int]:
        return [int(event.id.split("-")[1]) for event in self.buffer]

    def pushed(self, events: list[StoredEvent], shared: list[Event] | None) -> bool:
        if len(self.buffer) + len(events) > _feed.PAGE_SIZE:
            self.released_after = len(self.buffer)
            return False
        self.buffer.extend(shared or [event.to_event(GENERATION) for event in events])
        self.wake()
        return True

    def wake(self) -> None:
        self.wakes += 1

    def released(self) -> None:
        self.released_after = len(self.buffer)

    def notify(self) -> None:
        self.notified += 1


def follow(feed: SessionFeed, follower: _Recorder) -> None:
    feed.attach(follower, follower.buffer, follower.wake)


def test_batches_handed_over_reach_followers_once_and_a_gap_means_a_read() -> None:
    feed = window_feed()
    recorder = _Recorder()
    feed._watch = cast(Any, recorder)
    feed.users = 1
    follow(feed, recorder)

    def hand_over(first: int, last: int) -> None:
        feed._on_append(GENERATION, [stored(seq) for seq in range(first, last + 1)])

    hand_over(1, 3)  # follows the window
    hand_over(2, 3)  # read already: nothing
    hand_over(3, 6)  # overlaps: only 4-6 are new
    hand_over(7, 7)
    assert recorder.seqs == [1, 2, 3, 4, 5, 6, 7]
    assert feed._last_seq == 7
    assert len(feed._events) == 7
    assert recorder.notified == 0

    hand_over(9, 10)  # event 8 was missed: the feed reads storage instead
    assert recorder.seqs == [1, 2, 3, 4, 5, 6, 7]
    assert recorder.notified == 1
    feed._on_append(GENERATION + 1, [stored(1)])  # a generation not read yet
    assert recorder.notified == 2
    assert feed._last_seq == 7


def mostly_text(seq: int) -> StoredEvent:
    """A log with a JSON event now and then (a batch of one, one every
    reader shares, is the common batch)."""
    if seq % 7:
        return StoredEvent(seq, "message", DataKind.TEXT, f"t{seq}")
    return stored(seq)


def expected_mostly_text(seq: int) -> Event:
    return mostly_text(seq).to_event(GENERATION)


@settings(max_examples=300, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            # batch: a batch handed over; follow: a reader starts following;
            # read: a follower's reader takes what it holds; take: a reader
            # takes from the window; taker: whether such a reader is there.
            st.sampled_from(["batch"] * 6 + ["follow", "read", "take", "taker"]),
            st.sampled_from([1, 1, 1, 2, 5]),  # the batch's size
            st.sampled_from([0, 0, 0, 1, 3]),  # how many held events it repeats
            st.sampled_from([False, False, False, True]),  # one before it missed
            st.integers(0, 50),  # which follower; how far back a take starts
        ),
        min_size=1,
        max_size=60,
    )
)
def test_every_follower_gets_each_event_once_in_order_until_let_go(
    steps: list[tuple[str, int, int, bool, int]],
) -> None:
    """The one-event batch (each token), mixed with every other kind of batch,
    readers that join, fall a page behind (and are let go) or take from
    the window: what each follower is handed, and what the window holds,
    is the log."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_feed, "PAGE_SIZE", 4)  # followers fall behind soon
        feed = window_feed()
        watch = _Recorder()
        feed._watch = cast(Any, watch)
        taker = 1  # a reader that takes from the window, or none
        feed.users = taker
        followers: list[tuple[_Recorder, int]] = []  # and the seq each began after
        read: dict[int, list[Event]] = {}  # what each follower's reader took
        last = 0
        for step, size, repeats, missed, index in steps:
            if step == "batch":
                first = last + 2 if missed else max(1, last + 1 - repeats)
                end = max(last, first - 1) + size
                # As backends hand batches over: each Event built (not JSON).
                batch = [mostly_text(seq).share(GENERATION) for seq in range(first, end + 1)]
                notified = watch.notified
                feed._on_append(GENERATION, batch)
                if first > last + 1:
                    assert watch.notified == notified + 1  # read storage instead
                    assert feed._last_seq == last
                else:
                    last = feed._last_seq
                    assert last == batch[-1].seq
            elif step == "taker":
                feed.users += 1 - 2 * taker
                taker = 1 - taker
            elif step == "follow":
                follower = _Recorder()
                feed.users += 1
                follow(feed, follower)
                followers.append((follower, last))
            elif step == "read" and followers:
                follower, _ = followers[index % len(followers)]
                read.setdefault(id(follower), []).extend(follower.buffer)
                follower.buffer.clear()
                follower.wakes = 0
            elif step == "take":
                after = max(0, last - index)
                start = last - len(feed._events)
                taken = feed.take_events(GENERATION, after)
                if after >= start:
                    assert taken == [
                        expected_mostly_text(seq) for seq in range(after + 1, last + 1)
                    ]
            # The window ends at the last event the feed took in.
            events = feed._events
            assert events.first_seq + len(events) == feed._last_seq + 1 or not len(events)
            for follower, began in followers:
                got = read.get(id(follower), []) + list(follower.buffer)
                held = last if follower.released_after is None else began + len(got)
                assert got == [expected_mostly_text(seq) for seq in range(began + 1, held + 1)]
                if follower.released_after is None:
                    assert len(follower.buffer) <= 4
                    assert follower.wakes or not follower.buffer
