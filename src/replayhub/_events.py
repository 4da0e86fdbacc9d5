"""The value types of the public API and the encoding of events and cursors.

An event id is ``"<generation>-<sequence>"``: the generation that produced it
and its 1-based position in that generation's log. Ids are ordered, fit in an
SSE ``id:`` line, and are the same shape as Redis stream entry ids, so a
cursor maps to a storage position without a lookup. Callers treat them as
opaque strings.
"""

from __future__ import annotations

import enum
import itertools
import json
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, TypeAlias, cast, runtime_checkable

from ._error_types import ErrorType
from ._errors import InvalidInputError
from ._slots import fill_slots_directly

JSON: TypeAlias = dict[str, "JSON"] | list["JSON"] | str | int | float | bool | None
"""A value that :func:`json.dumps` accepts and :func:`json.loads` returns."""

Metadata: TypeAlias = dict[str, JSON]


@runtime_checkable
class EventLike(Protocol):
    """A value that names its own event: what :meth:`Producer.send` stores for
    it is ``__replayhub_event__()``, an ``(event name, data)`` pair. The typed
    LLM events of :mod:`replayhub.llm` are such values."""

    def __replayhub_event__(self) -> tuple[str, object]: ...


SendData: TypeAlias = (
    str | bytes | Mapping[str, Any] | Sequence[Any] | int | float | bool | EventLike | None
)
"""What :meth:`Producer.send` accepts: text, bytes, a JSON value (checked
when sent, so nested values are typed loosely), or an :class:`EventLike`."""


class State(enum.StrEnum):
    """The state of a session: ``live``, then exactly one terminal state."""

    LIVE = "live"
    """A producer holds the session and may still send."""
    DONE = "done"
    """The producer's block ended normally."""
    FAILED = "failed"
    """The producer's block raised; :attr:`Outcome.error` holds the message."""
    CANCELLED = "cancelled"
    """A cancel request, or a cancellation around the producer, ended it."""
    ABANDONED = "abandoned"
    """The producer vanished: its lease expired without a terminal write."""

    @property
    def terminal(self) -> bool:
        """Whether this state ends the session."""
        return self is not State.LIVE


class DataKind(enum.IntEnum):
    """How an event's payload is stored: text, raw bytes, or JSON text."""

    TEXT = 0
    BYTES = 1
    JSON = 2


@fill_slots_directly  # one is built per event stored: decoding a stored log
# (the late replay figure) took 16% longer without it (1,148 against 964 ns
# per event, 10,000 events)
@dataclass(frozen=True, slots=True)
class Event:
    """One event of a session's log, as a subscriber receives it."""

    id: str
    """Ordered, opaque id; use it as ``after=`` or as an SSE ``id:``."""
    event: str
    """The event name, ``"message"`` unless the producer chose another."""
    data: JSON | bytes
    """A :class:`str`, :class:`bytes`, or the JSON value the producer sent."""


_EVENT_SLOTS = cast(Any, Event)
_set_ids, _set_names, _set_data = (
    _EVENT_SLOTS.id.__set__,
    _EVENT_SLOTS.event.__set__,
    _EVENT_SLOTS.data.__set__,
)


_new_instance = object.__new__


def build_events(
    ids: Sequence[str], names: Iterable[str], data: Iterable[JSON | bytes]
) -> list[Event]:
    """``[Event(id, name, data) for ...]`` over the three, built field by field.

    A page of a stored log is built at once: the instances made in one call,
    then each field set across all of them, every loop in C. 176 ns an
    event against 260 through ``Event(...)`` (1,000 events, timeit): most of
    a cold replay is building its events. A new field must be set here too
    (``test_built_events_equal_the_constructed_ones``).
    """
    events: list[Event] = list(map(_new_instance, itertools.repeat(Event, len(ids))))
    deque(map(_set_ids, events, ids), maxlen=0)
    deque(map(_set_names, events, names), maxlen=0)
    deque(map(_set_data, events, data), maxlen=0)
    return events


def event_ids(generation: int, first_seq: int, count: int) -> list[str]:
    """The ids of ``count`` consecutive events from ``first_seq``
    (:func:`format_event_id`, with the generation formatted once)."""
    prefix = f"{generation}-"
    return [f"{prefix}{seq}" for seq in range(first_seq, first_seq + count)]


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a session's generation ended."""

    state: State
    error: str | None = None
    """The exception's description when :attr:`state` is ``failed``."""
    metadata: Metadata = field(default_factory=dict)
    """The session's metadata at the end, with every ``set_metadata`` applied."""
    error_type: ErrorType | None = None
    """What kind of failure it was when :attr:`state` is ``failed``: a
    timeout, the network, a rate limit, an overloaded provider, a provider's
    API error, or anything else (``internal``)."""


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """A snapshot of a session, as returned by :meth:`Hub.info` and friends."""

    session_id: str
    state: State
    generation: int
    """Grows by one each time a producer claims the session."""
    events: int
    """How many events the current generation has stored."""
    metadata: Metadata
    error: str | None
    created_at: datetime
    """When the current generation was claimed (UTC)."""
    updated_at: datetime
    """When the session last changed (UTC)."""
    error_type: ErrorType | None = None
    """The category of the failure when :attr:`state` is ``failed``."""

    @property
    def outcome(self) -> Outcome | None:
        """The outcome if the session has ended, else ``None``."""
        if self.state is State.LIVE:
            return None
        return Outcome(self.state, self.error, self.metadata, self.error_type)

    def to_json(self) -> dict[str, JSON]:
        """The snapshot as a JSON object (times in ISO 8601), e.g. for an API."""
        return {
            "session_id": self.session_id,
            "state": self.state.value,
            "generation": self.generation,
            "events": self.events,
            "metadata": self.metadata,
            "error": self.error,
            "error_type": None if self.error_type is None else self.error_type.value,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }


@dataclass(slots=True)
class StoredEvent:
    """An event as the core hands it to a backend and gets it back.

    ``payload`` is the text, the bytes, or the JSON text; ``seq`` is its
    1-based position in its generation's log. Internal and built once per
    event on the hot path, so not frozen (a frozen dataclass costs four times
    as much to build); nothing changes one after it is made, except
    :meth:`share` filling in :attr:`shared`.
    """

    seq: int
    event: str
    kind: DataKind
    payload: str | bytes
    shared: Event | None = field(default=None, compare=False, repr=False)
    """The event as every reader of its generation receives it, when the
    backend built it once for all of them (never for JSON, see below)."""

    def to_event(self, generation: int) -> Event:
        if self.shared is not None:
            return self.shared
        data: JSON | bytes = self.payload
        if self.kind is DataKind.JSON:
            # Decoded per reader so no two readers share a mutable value.
            data = json.loads(self.payload)
        return Event(format_event_id(generation, self.seq), self.event, data)

    def share(self, generation: int) -> StoredEvent:
        """Build :attr:`shared` (a pure function of the event), for a backend
        that hands this very object to readers; returns the event."""
        if self.shared is None and self.kind is not DataKind.JSON:
            # The id as format_event_id writes it, with no call: every token
            # stored comes here.
            self.shared = Event(f"{generation}-{self.seq}", self.event, self.payload)
        return self


KINDS_BY_NUMBER = tuple(DataKind)


class PackedEvents:
    """Consecutive events of one generation as a hub keeps them for long (a
    feed's window, the memory backend's log), for the garbage collector's
    sake: in columns of plain values, with no object per event.

    Kept as objects, 300 live replies of 1,500 events made full collections
    walk every one of them (passes of up to 262-353 ms). A tuple per event
    is not walked once the collector has seen it, but allocating it still
    counts towards the next collection: one kept tuple per event (two, with
    the memory backend's log) made up most of what set off collections at
    50 events/s per session. Appending a string to a list allocates nothing
    the collector counts; the sequence numbers are implicit (consecutive).
    """

    __slots__ = ("_first_seq", "kinds", "names", "payloads")

    def __init__(self, first_seq: int = 1) -> None:
        """:param first_seq: the sequence number the first event will have
        (the one :meth:`extend` is given, if none is kept then)."""
        self._first_seq = first_seq  # of the first event kept
        # The columns, one entry per event kept. Public for the one caller
        # per token that appends an event in line (to all three, never to
        # one alone): it follows the last event kept, or is ``first_seq``.
        self.names: list[str] = []
        self.kinds: list[DataKind] = []
        self.payloads: list[str | bytes] = []

    def __len__(self) -> int:
        return len(self.payloads)

    def extend(self, events: Sequence[StoredEvent]) -> int:
        """Keep ``events``, which follow the last one kept (any, if none is);
        returns how many events are kept now."""
        kept = len(self.payloads)
        if not events:
            return kept
        first = events[0].seq
        if not kept:
            self._first_seq = first
        elif first != self._first_seq + kept:
            raise ValueError(f"event {first} does not follow event {self._first_seq + kept - 1}")
        if len(events) == 1:  # one token per write: the common batch
            event = events[0]
            self.names.append(event.event)
            self.kinds.append(event.kind)
            self.payloads.append(event.payload)
            return kept + 1
        self.names += [event.event for event in events]
        self.kinds += [event.kind for event in events]
        self.payloads += [event.payload for event in events]
        return kept + len(events)

    @classmethod
    def of_columns(
        cls,
        first_seq: int,
        names: list[str],
        kinds: list[DataKind],
        payloads: list[str | bytes],
    ) -> PackedEvents:
        """Events ``first_seq``, ``first_seq + 1``, ... given as their columns
        (taken, not copied)."""
        packed = cls()
        packed._first_seq = first_seq
        packed.names, packed.kinds, packed.payloads = names, kinds, payloads
        return packed

    @property
    def first_seq(self) -> int:
        """The sequence number of the first event kept (when any is)."""
        return self._first_seq

    def unpack(self, start: int, stop: int, *, share: int | None = None) -> list[StoredEvent]:
        """The events kept at indexes ``start`` to ``stop`` (as a slice), as
        new objects; with ``share`` (their generation), each carries the
        :class:`Event` its readers share (:meth:`StoredEvent.share`)."""
        names = self.names[start:stop]
        kinds = self.kinds[start:stop]
        payloads = self.payloads[start:stop]
        first = self._first_seq + start
        seqs = range(first, first + len(payloads))
        if share is None:
            return list(map(StoredEvent, seqs, names, kinds, payloads))
        shared: list[Event | None] = list(
            build_events(event_ids(share, first, len(payloads)), names, payloads)
        )
        if DataKind.JSON in kinds:  # decoded per reader: never shared
            shared = [
                None if kind is DataKind.JSON else event
                for kind, event in zip(kinds, shared, strict=True)
            ]
        return list(map(StoredEvent, seqs, names, kinds, payloads, shared))

    def events(self, generation: int, start: int, stop: int) -> list[Event]:
        """The events kept at indexes ``start`` to ``stop`` as one reader
        receives them (JSON decoded for it alone), with no
        :class:`StoredEvent` in between."""
        names = self.names[start:stop]
        kinds = self.kinds[start:stop]
        payloads = self.payloads[start:stop]
        data = cast(list[JSON | bytes], payloads)
        if DataKind.JSON in kinds:
            data = [
                json.loads(value) if kind is DataKind.JSON else value
                for kind, value in zip(kinds, payloads, strict=True)
            ]
        return build_events(event_ids(generation, self._first_seq + start, len(data)), names, data)

    def keep_last(self, count: int) -> None:
        """Drop all but the newest ``count`` events."""
        drop = len(self.payloads) - count
        if drop > 0:
            del self.names[:drop], self.kinds[:drop], self.payloads[:drop]
            self._first_seq += drop


@dataclass(frozen=True, slots=True)
class Cursor:
    """A parsed event id: the position right after which a reader resumes."""

    generation: int
    seq: int


_MAX_ID_DIGITS = 19  # fits a signed 64-bit integer, as Redis stream ids need


def format_event_id(generation: int, seq: int) -> str:
    return f"{generation}-{seq}"


def parse_event_id(event_id: object) -> Cursor:
    """Parse an id produced by :func:`format_event_id`.

    :raises ~replayhub.InvalidInputError: if it is not such an id.
    """
    if not isinstance(event_id, str):
        raise InvalidInputError(f"an event id is a str, not {type(event_id).__name__}")
    gen_text, dash, seq_text = event_id.partition("-")
    if (
        dash
        and 0 < len(gen_text) <= _MAX_ID_DIGITS
        and 0 < len(seq_text) <= _MAX_ID_DIGITS
        and gen_text.isascii()
        and seq_text.isascii()
        and gen_text.isdigit()
        and seq_text.isdigit()
    ):
        cursor = Cursor(int(gen_text), int(seq_text))
        if cursor.generation >= 1:
            return cursor
    raise InvalidInputError(f"malformed event id {event_id!r}")


def utc_datetime(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)
