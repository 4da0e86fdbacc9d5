"""Key and channel names, and the packing of write batches in stream entries.

All keys of one session share a hash tag, ``{<session id>}``, with ``%``,
``{`` and ``}`` percent-escaped so a user's braces cannot break the tag; so a
session's keys live in one Redis Cluster slot and one script can touch them.
"""

from __future__ import annotations

import functools
import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from ..._errors import EventsLostError
from ..._events import KINDS_BY_NUMBER, DataKind, Event, PackedEvents, StoredEvent


def _escape(session_id: str) -> str:
    return session_id.replace("%", "%25").replace("{", "%7B").replace("}", "%7D")


@dataclass(frozen=True, slots=True)
class SessionKeys:
    session: str
    """The hash: state, generation, metadata, lease, cancel flag."""
    log: str
    """The stream: one entry per write batch, id ``<generation>-<last seq>``,
    one field ``b`` holding the batch (:func:`encode_batch`); once the
    session has ended, possibly rewritten in larger entries of the same
    form and the same events (``_packing``)."""
    index: str
    """The namespace's sorted set of session ids by last activity."""
    changes: str
    """Channel of wake-ups for readers: events stored, state changed."""
    claim: str
    """Channel of wake-ups for the producer: cancel requested, removed."""

    def all(self) -> list[str]:
        return [self.session, self.log, self.index]

    def slot_keys(self) -> list[str]:
        """The keys in the session's own hash slot (all but the index)."""
        return [self.session, self.log]


@functools.lru_cache(maxsize=4096)  # made per call and per session: build each once
def session_keys(namespace: str, session_id: str) -> SessionKeys:
    base = f"{namespace}:{{{_escape(session_id)}}}"
    return SessionKeys(
        session=f"{base}:s",
        log=f"{base}:l",
        index=f"{namespace}:index",
        changes=f"{base}:n",
        claim=f"{base}:c",
    )


def encode_batch(events: Sequence[StoredEvent]) -> bytes:
    """One write batch as one stream value.

    Stored per event, a 10,000-event log costs Redis and every reader 20,000
    bulk strings to parse; packed, it costs ten. The value is a JSON header,
    a newline, then the payloads back to back. The header lists runs of
    events of one kind and name: ``[kind, name, run byte length, [lengths]]``,
    lengths in characters for text and JSON (each run is decoded as one
    UTF-8 string, then sliced), in bytes for bytes.
    """
    if len(events) == 1:  # a batch per token at chat rates: 0.5 us, not 1.6
        event = events[0]
        payload, kind = event.payload, event.kind
        # (isinstance, not typing.cast: a call per token)
        chunk = payload if isinstance(payload, bytes) else payload.encode()
        name = json_name(event.event).encode()
        return b"[[%d,%b,%d,[%d]]]\n%b" % (kind, name, len(chunk), len(payload), chunk)
    header: list[str] = []
    chunks: list[bytes] = []
    for (kind, name), run in itertools.groupby(events, lambda event: (event.kind, event.event)):
        payloads = [event.payload for event in run]
        if kind is DataKind.BYTES:
            chunk = b"".join(cast(list[bytes], payloads))
        else:
            chunk = "".join(cast(list[str], payloads)).encode()
        # The header by hand: json.dumps of these small lists was 2.5 us of
        # a 3 us encode (a batch per token at chat rates). Same JSON.
        lengths = ",".join([str(len(payload)) for payload in payloads])
        header.append(f"[{int(kind)},{json_name(name)},{len(chunk)},[{lengths}]]")
        chunks.append(chunk)
    return b"%b\n%b" % (f"[{','.join(header)}]".encode(), b"".join(chunks))


@functools.lru_cache(maxsize=1024)
def json_name(name: str) -> str:
    return json.dumps(name, ensure_ascii=False)


#: Headers up to this long are parsed once each: a chat-rate batch is one
#: event, and its header (kind, name, byte length) repeats from token to
#: token. A one-event notification (what a process reading another's
#: producers decodes per token) took 6.3-10.7 us parsing each header, 3.6-6.3
#: us with this cache and the kind looked up by number.
_CACHED_HEADER = 64


Runs = tuple[tuple[int, str, int, tuple[int, ...]], ...]
"""A batch's header: per run of events of one kind and name, the kind's
number, the name, the run's byte length and each event's length."""


@functools.lru_cache(maxsize=1024)
def _parsed_header(header: bytes) -> Runs:
    return tuple(
        (kind, name, size, tuple(lengths)) for kind, name, size, lengths in json.loads(header)
    )


@functools.lru_cache(maxsize=1024)
def _cached_shape(header: bytes) -> tuple[Runs, int, tuple[DataKind, str] | None]:
    return _shape(_parsed_header(header))


def header_shape(header: bytes) -> tuple[Runs, int, tuple[DataKind, str] | None]:
    """A batch header's :func:`_shape`, cached for the short ones."""
    return _cached_shape(header) if len(header) <= _CACHED_HEADER else _shape(json.loads(header))


def _shape(runs: Runs) -> tuple[Runs, int, tuple[DataKind, str] | None]:
    """The runs, how many events they hold, and the kind and name of the
    one event when there is just one."""
    count = sum(len(run[3]) for run in runs)
    single = (KINDS_BY_NUMBER[runs[0][0]], runs[0][1]) if count == 1 else None
    return runs, count, single


def decode_notification(message: bytes) -> tuple[int, list[StoredEvent]] | None:
    """The generation and events a change notification carries, if any.

    ``append.lua`` publishes a stored batch as its entry id, a space and the
    packed value; every other change as a bare id.
    """
    entry_id, space, value = message.partition(b" ")
    if not space:
        return None
    generation_text, _, last_text = entry_id.decode().partition("-")
    split = value.index(b"\n")
    header = value[:split]
    _, _, single = header_shape(header)
    if single is not None:
        # One event (a token at chat rates, per session per write): its id
        # is the entry's, and no columns are worth making for it.
        kind, name = single
        chunk = value[split + 1 :]
        payload: str | bytes = chunk if kind is DataKind.BYTES else chunk.decode()
        shared = None if kind is DataKind.JSON else Event(entry_id.decode(), name, payload)
        return int(generation_text), [StoredEvent(int(last_text), name, kind, payload, shared)]
    generation = int(generation_text)
    packed = decode_columns([(entry_id, [b"b", value])], after_seq=0, limit=None)
    return generation, packed.unpack(0, len(packed), share=generation)


def decode_columns(
    entries: list[tuple[bytes, list[bytes]]], *, after_seq: int, limit: int | None
) -> PackedEvents:
    """The events of raw ``XRANGE`` entries (of one generation) that follow
    ``after_seq``, at most ``limit`` (``None``: all of them), in columns:
    what a page read becomes, built into objects only as a reader needs
    them (:meth:`PackedEvents.events`, :meth:`PackedEvents.unpack`).

    An entry of one event (a token written as it came: most of a chat
    reply's log) is taken whole, its header's shape cached. Else the loop
    over a run's events skips those before the cursor and past the limit by
    slicing, tests the run's kind once, and keeps only each payload. An
    entry wholly before the cursor is skipped on its id, unparsed.

    :raises ~replayhub.EventsLostError: if an entry does not follow the one
        before it (events missing from the middle of the log).
    """
    names: list[str] = []
    kinds: list[DataKind] = []
    payloads: list[str | bytes] = []
    keep = payloads.append
    first_seq = next_seq = after_seq + 1  # of the first event taken; of the next
    for entry_id, fields in entries:
        last = int(entry_id.partition(b"-")[2])
        if last <= after_seq:
            continue
        value = fields[1]
        split = value.index(b"\n")
        header = value[:split]
        runs, count, single = header_shape(header)
        seq = last - count  # before the entry's first event
        if payloads and seq + 1 != next_seq:
            raise EventsLostError(
                f"events {next_seq}-{seq} are missing from the stored log"
                if seq >= next_seq
                else f"the stored log repeats events {seq + 1}-{next_seq - 1}"
            )
        if single is not None:
            # One event, as a chat-rate producer writes each token: most
            # entries of a reply, so the run loop below is skipped for it
            # (2.5-4.5 us an entry through it, ~1 us here).
            kind, name = single
            chunk = value[split + 1 :]
            keep(chunk if kind is DataKind.BYTES else chunk.decode())
            names.append(name)
            kinds.append(kind)
            if len(payloads) == 1:
                first_seq = last
            next_seq = last + 1
            if len(payloads) == limit:
                break
            continue
        position = split + 1
        for kind_number, name, size, lengths in runs:
            chunk = value[position : position + size]
            position += size
            skip = max(0, after_seq - seq)  # events of the run at or before the cursor
            if skip >= len(lengths):
                seq += len(lengths)
                continue
            if not payloads:
                first_seq = next_seq = seq + skip + 1
            kind = KINDS_BY_NUMBER[kind_number]  # not DataKind(...): an enum call
            data: str | bytes = chunk if kind is DataKind.BYTES else chunk.decode()
            if len(lengths) == 1:  # a token written as it came: most entries of a reply
                keep(data)
                taken = 1
            else:
                wanted = (
                    lengths[skip:]
                    if limit is None
                    else lengths[skip : skip + limit - len(payloads)]
                )
                start = sum(lengths[:skip])
                for length in wanted:
                    end = start + length
                    keep(data[start:end])
                    start = end
                taken = len(wanted)
            names.extend(itertools.repeat(name, taken))
            kinds.extend(itertools.repeat(kind, taken))
            seq += len(lengths)
            next_seq += taken
            if len(payloads) == limit:
                return PackedEvents.of_columns(first_seq, names, kinds, payloads)
    return PackedEvents.of_columns(first_seq, names, kinds, payloads)
