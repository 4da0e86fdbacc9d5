"""Key and channel names, and the encoding of events in stream entries.

All keys of one session share a hash tag, ``{<session id>}``, with ``%``,
``{`` and ``}`` percent-escaped so a user's braces cannot break the tag; so a
session's keys live in one Redis Cluster slot and one script can touch them.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..._events import DataKind, StoredEvent


def _escape(session_id: str) -> str:
    return session_id.replace("%", "%25").replace("{", "%7B").replace("}", "%7D")


@dataclass(frozen=True, slots=True)
class SessionKeys:
    session: str
    """The hash: state, generation, metadata, lease, cancel flag."""
    log: str
    """The stream: one entry per write batch, id ``<generation>-<last seq>``."""
    index: str
    """The namespace's sorted set of session ids by last activity."""

    @property
    def changes(self) -> str:
        """Channel of wake-ups for readers: events stored, state changed."""
        return self.session[:-2] + ":n"

    @property
    def claim(self) -> str:
        """Channel of wake-ups for the producer: cancel requested, removed."""
        return self.session[:-2] + ":c"

    def all(self) -> list[str]:
        return [self.session, self.log, self.index]

    def slot_keys(self) -> list[str]:
        """The keys in the session's own hash slot (all but the index)."""
        return [self.session, self.log]


def session_keys(namespace: str, session_id: str) -> SessionKeys:
    base = f"{namespace}:{{{_escape(session_id)}}}"
    return SessionKeys(session=f"{base}:s", log=f"{base}:l", index=f"{namespace}:index")


def encode_event(event: StoredEvent) -> tuple[bytes, bytes]:
    """A stream field (kind digit and name) and value (the payload) for one event."""
    field = b"%d%s" % (event.kind, event.event.encode())
    payload = event.payload
    return field, payload.encode() if isinstance(payload, str) else payload


def decode_entries(
    entries: list[tuple[bytes, list[bytes]]], *, after_seq: int, limit: int
) -> list[StoredEvent]:
    """The events of raw ``XRANGE`` entries that follow ``after_seq``, at most ``limit``."""
    events: list[StoredEvent] = []
    for entry_id, fields in entries:
        last_seq = int(entry_id.split(b"-")[1])
        count = len(fields) // 2
        seq = last_seq - count
        for index in range(0, len(fields), 2):
            seq += 1
            if seq <= after_seq:
                continue
            field, value = fields[index], fields[index + 1]
            kind = DataKind(field[0] - 48)
            name = field[1:].decode()
            payload: str | bytes = value if kind is DataKind.BYTES else value.decode()
            events.append(StoredEvent(seq, name, kind, payload))
            if len(events) == limit:
                return events
    return events
