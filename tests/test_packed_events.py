"""How a hub keeps events for long: ``_events.PackedEvents``."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from hypothesis import given
from hypothesis import strategies as st

from replayhub._events import DataKind, PackedEvents, StoredEvent


def events(first: int, count: int) -> list[StoredEvent]:
    kinds = list(DataKind)
    return [
        StoredEvent(seq, f"e{seq % 3}", kinds[seq % len(kinds)], f"p{seq}") for seq in
        range(first, first + count)
    ]  # fmt: skip


@contextmanager
def collector_paused() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def test_keeping_events_counts_towards_no_collection() -> None:
    """What is kept adds nothing to the collector's count of new objects,
    which sets off collections: a tuple per event added one each."""
    packed = PackedEvents()
    singles = [events(seq, 1) for seq in range(1, 1001)]
    batches = [events(1001 + 100 * index, 100) for index in range(10)]
    with collector_paused():
        gc.collect()
        before = gc.get_count()[0]
        for batch in singles + batches:
            packed.extend(batch)
        added = gc.get_count()[0] - before
    assert len(packed) == 2000
    assert added < 20  # the list a batch of 100 is taken through, now and then
    # The same 2,000 events as tuples, for comparison: the test can tell.
    with collector_paused():
        gc.collect()
        before = gc.get_count()[0]
        tuples = [(e.seq, e.event, int(e.kind), e.payload) for b in singles + batches for e in b]
        assert gc.get_count()[0] - before >= 2000
    del tuples


@given(
    sizes=st.lists(st.integers(min_value=0, max_value=40), max_size=30),
    first=st.integers(min_value=1, max_value=5),
    keep=st.integers(min_value=0, max_value=200),
    start=st.integers(min_value=0, max_value=300),
    length=st.integers(min_value=0, max_value=300),
)
def test_events_come_back_as_kept_after_trimming(
    sizes: list[int], first: int, keep: int, start: int, length: int
) -> None:
    packed = PackedEvents()
    kept: list[StoredEvent] = []
    for size in sizes:
        batch = events(first + len(kept), size)
        packed.extend(batch)
        kept += batch
    packed.keep_last(keep)
    kept = kept[max(0, len(kept) - keep) :]
    assert len(packed) == len(kept)
    assert packed.unpack(start, start + length) == kept[start : start + length]


def test_a_batch_that_does_not_follow_is_refused() -> None:
    packed = PackedEvents()
    packed.extend(events(5, 3))  # an empty window takes any first event
    with pytest.raises(ValueError, match="event 9 does not follow event 7"):
        packed.extend(events(9, 1))
    assert packed.unpack(0, 10) == events(5, 3)


def valid_events(first: int, count: int) -> list[StoredEvent]:
    """As :func:`events`, with JSON payloads that decode."""
    kinds = list(DataKind)
    payloads: dict[DataKind, str | bytes] = {
        DataKind.TEXT: "p",
        DataKind.BYTES: b"\xff",
        DataKind.JSON: '{"k":[1]}',
    }
    return [
        StoredEvent(seq, f"e{seq % 3}", kinds[seq % 3], payloads[kinds[seq % 3]])
        for seq in range(first, first + count)
    ]


@given(
    first=st.integers(min_value=1, max_value=10**12),
    count=st.integers(min_value=0, max_value=12),
    start=st.integers(min_value=0, max_value=14),
    length=st.integers(min_value=0, max_value=14),
    generation=st.integers(min_value=1, max_value=10**6),
)
def test_kept_events_build_into_what_each_event_makes(
    first: int, count: int, start: int, length: int, generation: int
) -> None:
    """Built a page at a time, each event is what it makes on its own: the
    events one reader receives (JSON decoded for it alone), and the stored
    events with the Event their readers share (none for JSON)."""
    kept = valid_events(first, count)
    packed = PackedEvents.of_columns(
        first,
        [event.event for event in kept],
        [event.kind for event in kept],
        [event.payload for event in kept],
    )
    wanted = kept[start : start + length]
    built = packed.events(generation, start, start + length)
    assert built == [event.to_event(generation) for event in wanted]
    again = packed.events(generation, start, start + length)
    for one, other in zip(built, again, strict=True):
        if isinstance(one.data, dict):  # decoded afresh: no two reads share it
            assert one.data is not other.data
    shared = packed.unpack(start, start + length, share=generation)
    assert shared == wanted
    for stored in shared:
        expected = None if stored.kind is DataKind.JSON else stored.to_event(generation)
        assert stored.shared == expected
