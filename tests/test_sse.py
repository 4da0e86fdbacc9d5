"""SSE encoding: every event round-trips through a spec-following parser."""

from __future__ import annotations

import base64
import json

from hypothesis import given
from hypothesis import strategies as st

from replayhub import ErrorType, Event, Outcome, State
from replayhub._events import JSON
from replayhub.sse import (
    BYTES_SUFFIX,
    END_EVENT,
    ERROR_EVENT,
    encode_comment,
    encode_error,
    encode_event,
    encode_outcome,
)

from .sse_client import parse


def lines_of(text: str) -> list[str]:
    # The browser splits on CR, LF and CRLF alike.
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


@given(st.text(), st.text(min_size=1, max_size=64).filter(str.isprintable))
def test_text_round_trips_with_line_breaks_normalised(data: str, name: str) -> None:
    [message] = parse(lines_of(encode_event(Event("7-3", name, data))))
    assert message.id == "7-3"
    assert message.event == name
    assert message.data == data.replace("\r\n", "\n").replace("\r", "\n")


@given(st.binary())
def test_bytes_travel_as_base64(data: bytes) -> None:
    [message] = parse(lines_of(encode_event(Event("1-1", "audio", data))))
    assert message.event == "audio" + BYTES_SUFFIX
    assert base64.b64decode(message.data) == data


def test_json_values_travel_as_json() -> None:
    value: JSON = {"name": "f", "args": ["a\nb", 1, None]}
    [message] = parse(lines_of(encode_event(Event("1-2", "tool-call", value))))
    assert json.loads(message.data) == value


def test_outcome_is_a_reserved_event_without_an_id() -> None:
    text = encode_event(Event("1-1", "message", "x")) + encode_outcome(
        Outcome(State.FAILED, "ValueError: boom\nline two", {"usage": 3}, ErrorType.INTERNAL)
    )
    first, last = parse(lines_of(text))
    assert last.event == END_EVENT
    assert json.loads(last.data) == {
        "state": "failed",
        "error": "ValueError: boom\nline two",
        "error_type": "internal",
        "metadata": {"usage": 3},
    }
    assert last.id == first.id == "1-1"  # resuming still starts after the last real event


def test_comments_are_ignored_by_clients() -> None:
    assert parse(lines_of(encode_comment("ping\nmore"))) == []


def test_an_error_message_cannot_break_out_of_its_event() -> None:
    [message] = parse(lines_of(encode_error("gone\n\nevent: fake\ndata: injected")))
    assert message.event == ERROR_EVENT
    assert message.data == "gone\n\nevent: fake\ndata: injected"
