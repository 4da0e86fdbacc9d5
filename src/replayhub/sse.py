"""Server-Sent Events encoding of replayhub events and outcomes.

Each event becomes::

    id: <event id>
    event: <event name>
    data: <payload line 1>
    data: <payload line 2>

Text is sent as is (split on line breaks, which the browser joins back with
``\\n``); JSON values as their JSON text; bytes as base64, with the event
name suffixed ``;base64`` so a client can tell. The end of a session is one
last event named ``replayhub.end`` (producers cannot use the ``replayhub.`` prefix) whose data is
the outcome as JSON: ``{"state": "failed", "error": "...", "error_type":
"rate_limit", "metadata": {...}}`` (``error`` and ``error_type`` are ``null``
unless the session failed).
It carries no ``id``, so a reconnecting client still resumes after the last
real event.
"""

from __future__ import annotations

import base64
import json
import re

from ._events import Event, Outcome
from ._settings import RESERVED_EVENT_PREFIX

END_EVENT = RESERVED_EVENT_PREFIX + "end"
"""The name of the final event, which carries the session's outcome."""

ERROR_EVENT = RESERVED_EVENT_PREFIX + "error"
"""Sent instead of the end event if the session vanished while being read."""

BYTES_SUFFIX = ";base64"
"""Appended to the name of an event whose data is base64-encoded bytes."""

_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def encode_event(event: Event) -> str:
    """One SSE message for ``event``."""
    name = event.event
    data = event.data
    if isinstance(data, bytes):
        text = base64.b64encode(data).decode()
        name += BYTES_SUFFIX
    elif isinstance(data, str):
        text = data
    else:
        text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"id: {event.id}\nevent: {name}\n{_data_lines(text)}\n"


def encode_outcome(outcome: Outcome) -> str:
    """The final SSE message, carrying the session's outcome."""
    payload = {
        "state": outcome.state.value,
        "error": outcome.error,
        "error_type": None if outcome.error_type is None else outcome.error_type.value,
        "metadata": outcome.metadata,
    }
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return f"event: {END_EVENT}\n{_data_lines(text)}\n"


def encode_comment(text: str = "") -> str:
    """A comment line: keeps an idle connection alive; clients ignore it."""
    return "".join(f":{line}\n" for line in _LINE_BREAK.split(text)) + "\n"


def encode_error(message: str) -> str:
    """The final SSE message when the session vanished while being read."""
    return f"event: {ERROR_EVENT}\n{_data_lines(message)}\n"


def _data_lines(text: str) -> str:
    if "\n" not in text and "\r" not in text:  # a token: one line, no split
        return f"data: {text}\n"
    return "".join(f"data: {line}\n" for line in _LINE_BREAK.split(text))
