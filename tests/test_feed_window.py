"""The feed's window of a session's newest events, as readers take them.

The window keeps events packed and builds objects only for readers that take
them from it (readers that are handed each batch need none): whatever the mix
of the two over time, and across trims, a take must return exactly the events
after the cursor, in order, as each was stored.
"""

from __future__ import annotations

from typing import Any, cast

from hypothesis import given, settings
from hypothesis import strategies as st

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
        feed._followers = {} if taker else {follower: None}
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
    """A follower that keeps what it is handed, and a watch that counts wake-ups."""

    def __init__(self) -> None:
        self.seqs: list[int] = []
        self.notified = 0

    def pushed(self, events: list[StoredEvent], shared: list[Event] | None) -> bool:
        self.seqs += [event.seq for event in events]
        return True

    def released(self) -> None:
        pass

    def notify(self) -> None:
        self.notified += 1


def test_batches_handed_over_reach_followers_once_and_a_gap_means_a_read() -> None:
    feed = window_feed()
    recorder = _Recorder()
    feed._watch = cast(Any, recorder)
    feed.users = 1
    feed.attach(recorder)

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
