"""Bad input gets a clear InvalidInputError before anything is written."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from replayhub import Hub, InvalidInputError, State
from replayhub._settings import MAX_SESSION_ID_LENGTH, check_event_name, check_session_id

from .conftest import HubFactory
from .helpers import collect, texts

BAD_SESSION_IDS: list[Any] = [
    "",
    "x" * (MAX_SESSION_ID_LENGTH + 1),
    "a\nb",
    "a\rb",
    "nul\x00",
    "tab\t",
    "del\x7f",
    "\ud800lone-surrogate",
    None,
    42,
    b"bytes",
]


@pytest.mark.parametrize("session_id", BAD_SESSION_IDS)
async def test_bad_session_ids_are_rejected_everywhere(hub: Hub, session_id: Any) -> None:
    with pytest.raises(InvalidInputError):
        hub.produce(session_id)
    with pytest.raises(InvalidInputError):
        hub.subscribe(session_id)
    for coro in (hub.info, hub.cancel, hub.remove):
        with pytest.raises(InvalidInputError):
            await coro(session_id)
    with pytest.raises(InvalidInputError):
        await hub.active(["ok", session_id])
    assert await hub.sessions() == []


@pytest.mark.parametrize(
    "session_id", ["{tag}", "a:b:c", "*", "spaces are fine", "名前", "x" * 256]
)
async def test_unusual_but_valid_session_ids_work(hub: Hub, session_id: str) -> None:
    async with hub.produce(session_id) as stream:
        await stream.send("ok")
    events, outcome = await collect(hub, session_id)
    assert texts(events) == ["ok"]
    assert outcome.state is State.DONE


BAD_EVENTS: list[tuple[Any, Any]] = [
    ("x", ""),  # empty name
    ("x", "a\nb"),  # SSE injection
    ("x", "a\rb"),
    ("x", "n" * 65),
    ("x", "replayhub.done"),  # reserved
    ("x", 7),
    (object(), "message"),  # unserialisable
    ({"set": {1, 2}}, "message"),
    (math.nan, "message"),  # not JSON
    ({"x": math.inf}, "message"),
    ("\udc80", "message"),  # not UTF-8 encodable
]


@pytest.mark.parametrize(("data", "event"), BAD_EVENTS)
async def test_bad_events_are_rejected_and_nothing_is_written(
    hub: Hub, data: Any, event: Any
) -> None:
    async with hub.produce("s") as stream:
        await stream.send("before")
        with pytest.raises(InvalidInputError):
            await stream.send(data, event=event)
        await stream.send("after")
    events, outcome = await collect(hub, "s")
    assert texts(events) == ["before", "after"]
    g = stream.generation
    assert [e.id for e in events] == [f"{g}-1", f"{g}-2"]  # the rejected event took no id
    assert outcome.state is State.DONE


async def test_event_size_limit_is_exact(make_hub: HubFactory) -> None:
    async with make_hub(max_event_bytes=10) as hub:
        async with hub.produce("s") as stream:
            await stream.send("x" * 10)
            await stream.send(b"y" * 10)
            await stream.send("é" * 5)  # 10 bytes of UTF-8
            too_big: Any
            for too_big in ("x" * 11, b"y" * 11, "é" * 6, ["x" * 8]):
                with pytest.raises(InvalidInputError, match="max_event_bytes"):
                    await stream.send(too_big)
        events, _ = await collect(hub, "s")
        assert texts(events) == ["x" * 10, b"y" * 10, "é" * 5]


BAD_METADATA: list[Any] = [
    ["not", "a", "mapping"],
    {1: "int key"},
    {"x": object()},
    {"x": math.nan},
    "string",
]


@pytest.mark.parametrize("metadata", BAD_METADATA)
async def test_bad_metadata_is_rejected(hub: Hub, metadata: Any) -> None:
    with pytest.raises(InvalidInputError):
        hub.produce("s", metadata=metadata)
    async with hub.produce("s", metadata={"ok": 1}) as stream:
        with pytest.raises(InvalidInputError):
            await stream.set_metadata(metadata)
        assert stream.metadata == {"ok": 1}
    _, outcome = await collect(hub, "s")
    assert outcome.metadata == {"ok": 1}


async def test_metadata_size_limit(make_hub: HubFactory) -> None:
    async with make_hub(max_metadata_bytes=32) as hub:
        with pytest.raises(InvalidInputError, match="max_metadata_bytes"):
            hub.produce("s", metadata={"k": "v" * 40})
        async with hub.produce("s", metadata={"k": "v"}) as stream:
            with pytest.raises(InvalidInputError, match="max_metadata_bytes"):
                await stream.set_metadata({"big": "v" * 40})


@pytest.mark.parametrize(
    "options",
    [
        {"lease_ttl": 0},
        {"lease_ttl": -1},
        {"lease_ttl": math.inf},
        {"retention": -1},
        {"max_event_bytes": 0},
        {"max_events": 1.5},
        {"buffer_size": True},
        {"namespace": ""},
        {"namespace": "has space"},
        {"namespace": "{brace}"},
    ],
)
def test_bad_options_are_rejected(options: dict[str, Any]) -> None:
    with pytest.raises(InvalidInputError):
        Hub(**options)


@pytest.mark.parametrize("url", ["redis-ish://x", "memory://host", "memory:///path", "nope", ""])
def test_bad_urls_are_rejected(url: str) -> None:
    with pytest.raises(InvalidInputError):
        Hub.from_url(url)


@given(st.text(max_size=300))
def test_session_id_check_agrees_with_its_documented_rule(session_id: str) -> None:
    documented_ok = (
        0 < len(session_id) <= MAX_SESSION_ID_LENGTH
        and not any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in session_id)
        and not any(0xD800 <= ord(c) <= 0xDFFF for c in session_id)
    )
    try:
        check_session_id(session_id)
    except InvalidInputError:
        assert not documented_ok
    else:
        assert documented_ok


@given(st.text(max_size=80))
def test_event_names_never_carry_line_breaks(name: str) -> None:
    try:
        check_event_name(name)
    except InvalidInputError:
        return
    assert "\n" not in name
    assert "\r" not in name
    assert 0 < len(name) <= 64
