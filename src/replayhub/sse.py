"""Server-Sent Events encoding of replayhub events and outcomes.

Each event becomes::

    id: <event id>
    event: <event name>
    data: <payload line 1>
    data: <payload line 2>

Text is sent as is (split on line breaks, which the browser joins back with
``\\n``); JSON values as their JSON text; bytes as base64, with the event
name suffixed ``;base64`` so a client can tell. The end of a session is one
last event named ``replayhub.end`` (a name producers cannot use) whose data is
the outcome as JSON: ``{"state": "done", "error": null, "metadata": {...}}``.
It carries no ``id``, so a reconnecting client still resumes after the last
real event.
"""

from __future__ import annotations

import base64
import json
import re

from ._events import Event, Outcome

END_EVENT = "replayhub.end"
"""The name of the final event, which carries the session's outcome."""

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
    payload = {"state": outcome.state.value, "error": outcome.error, "metadata": outcome.metadata}
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return f"event: {END_EVENT}\n{_data_lines(text)}\n"


def encode_comment(text: str = "") -> str:
    """A comment line: keeps an idle connection alive; clients ignore it."""
    return "".join(f":{line}\n" for line in _LINE_BREAK.split(text)) + "\n"


def encode_retry(milliseconds: int) -> str:
    """Tell the client how long to wait before reconnecting."""
    return f"retry: {int(milliseconds)}\n\n"


def _data_lines(text: str) -> str:
    return "".join(f"data: {line}\n" for line in _LINE_BREAK.split(text))
