"""The typed LLM vocabulary: its wire form, decoding, validation, folding,
and round trips through real storage (a property test); error categories."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from dataclasses import replace
from typing import Any

import anthropic
import httpx2
import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from replayhub import ErrorType, Event, InvalidInputError, State, llm
from replayhub._error_types import classify_error

from .conftest import HubFactory

EVERY_KIND: list[tuple[llm.LLMEvent, str, object]] = [
    (llm.MessageStart("m1", "gpt"), "message-start", {"message_id": "m1", "model": "gpt"}),
    (llm.MessageStop("length"), "message-stop", {"finish_reason": "length"}),
    (llm.TextDelta("Hel"), "text-delta", "Hel"),
    (llm.ReasoningDelta("hmm"), "reasoning-delta", "hmm"),
    (llm.ContentStart(2, "tool-call"), "content-start", {"index": 2, "type": "tool-call"}),
    (llm.ContentEnd(2), "content-end", {"index": 2}),
    (llm.ToolCallStart("c1", "f"), "tool-call-start", {"id": "c1", "name": "f"}),
    (llm.ToolCallDelta("c1", '{"a'), "tool-call-delta", {"id": "c1", "delta": '{"a'}),
    (
        llm.ToolCall("c1", "f", {"a": [1]}),
        "tool-call",
        {"id": "c1", "name": "f", "arguments": {"a": [1]}},
    ),
    (
        llm.ToolResult("c1", {"t": 21}),
        "tool-result",
        {"id": "c1", "output": {"t": 21}, "is_error": False},
    ),
    (
        llm.Usage(12, 40, 3),
        "usage",
        {
            "input_tokens": 12,
            "output_tokens": 40,
            "reasoning_tokens": 3,
            "cached_input_tokens": None,
        },
    ),
    (
        llm.Error("slow down", ErrorType.RATE_LIMIT),
        "error",
        {"type": "rate_limit", "message": "slow down"},
    ),
    (llm.Data("sources", ["a"], id="s1"), "data-sources", {"data": ["a"], "id": "s1"}),
    (llm.Data("progress", 0.5), "data-progress", {"data": 0.5}),
]


@pytest.mark.parametrize(("item", "name", "data"), EVERY_KIND, ids=lambda v: str(v)[:30])
def test_each_typed_event_has_a_stable_wire_form_and_decodes_back(
    item: llm.LLMEvent, name: str, data: object
) -> None:
    assert item.__replayhub_event__() == (name, data)
    assert llm.decode(Event("1-1", name, data)) == item  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "event",
    [
        Event("1-1", "message", "plain"),
        Event("1-1", "text-delta", {"not": "text"}),
        Event("1-1", "text-delta", b"bytes"),
        Event("1-1", "usage", {"input_tokens": -1, "output_tokens": 0}),
        Event("1-1", "tool-call", {"id": "c1"}),
        Event("1-1", "error", {"type": "no such category", "message": "x"}),
        Event("1-1", "message-stop", {"finish_reason": "tool_calls"}),
        Event("1-1", "data-", {"data": 1}),
        Event("1-1", "data-x", [1, 2]),
        Event("1-1", "content-start", "0"),
    ],
)
def test_an_event_outside_the_vocabulary_comes_back_untouched(event: Event) -> None:
    assert llm.decode(event) is event


@pytest.mark.parametrize(
    "make",
    [
        lambda: llm.TextDelta(3),  # type: ignore[arg-type]
        lambda: llm.MessageStop("tool_calls"),  # type: ignore[arg-type]
        lambda: llm.ContentStart(-1, "text"),
        lambda: llm.ContentStart(0, "image"),  # type: ignore[arg-type]
        lambda: llm.Usage(True, 0),
        lambda: llm.Usage(1, 2, reasoning_tokens=-3),
        lambda: llm.Error("x", "teapot"),  # type: ignore[arg-type]
        lambda: llm.Data("", 1),
        lambda: llm.ToolResult("c1", 1, is_error="yes"),  # type: ignore[arg-type]
    ],
)
def test_a_malformed_typed_event_is_rejected_when_made(make: Any) -> None:
    with pytest.raises(InvalidInputError):
        make()


async def test_a_typed_event_with_an_event_name_or_bad_data_is_rejected_before_it_is_queued(
    make_hub: HubFactory,
) -> None:
    async with make_hub() as hub:
        async with hub.produce("chat") as stream:
            with pytest.raises(InvalidInputError, match="names its own event"):
                await stream.send(llm.TextDelta("x"), event="other")
            with pytest.raises(InvalidInputError, match="not serialisable"):
                await stream.send(llm.ToolCall("c1", "f", {"when": object()}))  # type: ignore[dict-item]
            with pytest.raises(InvalidInputError, match="event name"):
                await stream.send(llm.Data("x" * 70, 1))
            await stream.send(llm.TextDelta("kept"))
        info = await hub.info("chat")
    assert info is not None
    assert info.events == 1
    assert info.state is State.DONE


def test_folding_adds_up_text_reasoning_calls_and_usage() -> None:
    other = Event("1-9", "custom", {"k": 1})
    message = llm.fold(
        [
            llm.MessageStart("m1", "model-a"),
            llm.ReasoningDelta("think "),
            llm.TextDelta("Hel"),
            llm.ReasoningDelta("more"),
            llm.TextDelta("lo"),
            llm.ToolCall("c1", "f", {"a": 1}),
            llm.ToolResult("c1", "ok"),
            llm.Usage(10, 5, None, 2),
            llm.MessageStop("tool-calls"),
            llm.MessageStart("m2", "model-b"),  # a second step keeps the first's id
            llm.Usage(1, 1, 4),
            llm.Data("sources", ["x"]),
            llm.Error("tool failed", ErrorType.API),
            other,
            llm.MessageStop("stop"),
        ]
    )
    assert message == llm.Message(
        message_id="m1",
        model="model-a",
        text="Hello",
        reasoning="think more",
        tool_calls=(llm.ToolCall("c1", "f", {"a": 1}),),
        tool_results=(llm.ToolResult("c1", "ok"),),
        usage=llm.Usage(11, 6, 4, 2),
        finish_reason="stop",
        data=(llm.Data("sources", ["x"]),),
        errors=(llm.Error("tool failed", ErrorType.API),),
        other_events=(other,),
    )


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)
ids = st.text(min_size=1, max_size=8)
typed_events = st.one_of(
    st.builds(llm.MessageStart, st.none() | ids, st.none() | ids),
    st.builds(llm.MessageStop, st.sampled_from(sorted(llm._vocabulary.FINISH_REASONS))),
    st.builds(llm.TextDelta, st.text(max_size=12)),
    st.builds(llm.ReasoningDelta, st.text(max_size=12)),
    st.builds(
        llm.ContentStart, st.integers(0, 9), st.sampled_from(["text", "reasoning", "tool-call"])
    ),
    st.builds(llm.ContentEnd, st.integers(0, 9)),
    st.builds(llm.ToolCallStart, ids, ids),
    st.builds(llm.ToolCallDelta, ids, st.text(max_size=8)),
    st.builds(llm.ToolCall, ids, ids, json_values),
    st.builds(llm.ToolResult, ids, json_values, st.booleans()),
    st.builds(
        llm.Usage,
        st.integers(0, 10**6),
        st.integers(0, 10**6),
        st.none() | st.integers(0, 99),
        st.none() | st.integers(0, 99),
    ),
    st.builds(llm.Error, st.text(max_size=12), st.sampled_from(list(ErrorType))),
    st.builds(
        llm.Data,
        st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True),
        json_values,
        st.none() | ids,
    ),
)


@pytest.mark.parametrize("backend_kind", ["memory", "redis"])
@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(sent=st.lists(typed_events, max_size=30))
async def test_any_sequence_of_typed_events_round_trips_through_storage(
    make_hub: HubFactory, sent: list[llm.LLMEvent]
) -> None:
    async with make_hub() as hub:
        async with hub.produce("chat") as stream:
            for item in sent:
                await stream.send(item)
        async with hub.subscribe("chat") as events:
            read = [item async for item in llm.read(events)]
        collected = await llm.collect(hub, "chat")
    assert read == sent
    assert collected.outcome is not None
    assert collected.outcome.state is State.DONE
    assert replace(collected, outcome=None) == llm.fold(sent)


def _request() -> httpx2.Request:
    return httpx2.Request("POST", "http://provider.test/v1/chat/completions")


def _status(code: int, body: object = None) -> httpx2.Response:
    return httpx2.Response(code, request=_request(), json=body)


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (TimeoutError(), ErrorType.TIMEOUT),
        (ConnectionResetError(), ErrorType.NETWORK),
        (httpx2.ConnectError("refused"), ErrorType.NETWORK),
        (httpx2.ReadTimeout("slow"), ErrorType.TIMEOUT),
        (openai.APITimeoutError(request=_request()), ErrorType.TIMEOUT),
        (openai.APIConnectionError(request=_request()), ErrorType.NETWORK),
        (
            openai.RateLimitError("slow down", response=_status(429), body=None),
            ErrorType.RATE_LIMIT,
        ),
        (openai.InternalServerError("boom", response=_status(500), body=None), ErrorType.API),
        (
            openai.InternalServerError("busy", response=_status(503), body=None),
            ErrorType.OVERLOADED,
        ),
        (openai.BadRequestError("bad", response=_status(400), body=None), ErrorType.API),
        (
            openai.APIError("quota", request=_request(), body={"code": "insufficient_quota"}),
            ErrorType.RATE_LIMIT,
        ),
        (anthropic.RateLimitError("slow", response=_status(429), body=None), ErrorType.RATE_LIMIT),
        (anthropic.APIStatusError("over", response=_status(529), body=None), ErrorType.OVERLOADED),
        (
            anthropic.APIStatusError(
                "over",
                response=_status(200),
                body={"type": "error", "error": {"type": "overloaded_error", "message": "x"}},
            ),
            ErrorType.OVERLOADED,
        ),
        (anthropic.APIConnectionError(request=_request()), ErrorType.NETWORK),
        (llm.StreamError("mine", type="rate_limit"), ErrorType.RATE_LIMIT),
        (KeyError("bug"), ErrorType.INTERNAL),
    ],
    ids=lambda v: type(v).__name__,
)
def test_failures_are_categorised_from_the_real_sdk_exceptions(
    exc: BaseException, expected: ErrorType
) -> None:
    assert classify_error(exc) is expected


def test_a_stream_error_names_a_known_category() -> None:
    with pytest.raises(ValueError, match="error type must be one of"):
        llm.StreamError("x", type="teapot")


@pytest.mark.parametrize("backend_kind", ["memory", "redis"])
async def test_the_outcome_carries_the_category_of_what_ended_the_block(
    make_hub: HubFactory,
) -> None:
    def by_app(exc: BaseException) -> str | None:
        return "overloaded" if isinstance(exc, LookupError) else None

    async with make_hub(classify_error=by_app) as hub:
        with pytest.raises(llm.StreamError):
            async with hub.produce("a") as stream:
                await stream.send(llm.TextDelta("kept"))
                raise llm.StreamError("quota exhausted", type="rate_limit")
        with pytest.raises(KeyError):
            async with hub.produce("b"):
                raise KeyError("from the app's provider")
        with pytest.raises(ZeroDivisionError):
            async with hub.produce("c"):
                raise ZeroDivisionError
        async with hub.produce("d"):
            pass
        outcomes = {}
        for session_id in "abcd":
            info = await hub.info(session_id)
            assert info is not None
            outcomes[session_id] = (info.state, info.error_type)
        assert info is not None
        assert info.to_json()["error_type"] is None
        collected = await llm.collect(hub, "a")
    assert outcomes == {
        "a": (State.FAILED, ErrorType.RATE_LIMIT),
        "b": (State.FAILED, ErrorType.OVERLOADED),
        "c": (State.FAILED, ErrorType.INTERNAL),
        "d": (State.DONE, None),
    }
    assert collected.text == "kept"
    assert collected.outcome is not None
    assert collected.outcome.error == "StreamError: quota exhausted"
    assert collected.outcome.error_type is ErrorType.RATE_LIMIT


def test_a_hook_that_is_not_callable_is_rejected() -> None:
    from replayhub import Hub

    with pytest.raises(InvalidInputError, match="classify_error must be callable"):
        Hub(classify_error="rate_limit")  # type: ignore[arg-type]


def test_the_llm_layer_imports_and_works_without_either_sdk() -> None:
    script = textwrap.dedent(
        """
        import sys
        for name in ("openai", "anthropic", "httpx2"):
            sys.modules[name] = None  # any import of them now fails
        from replayhub import llm
        message = llm.fold([llm.TextDelta("ok"), llm.MessageStop("stop")])
        assert message.text == "ok", message
        print("imported without the SDKs")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "imported without the SDKs\n"
