"""The relays, with the real OpenAI and Anthropic SDKs parsing recorded
streams: what is stored, what a reader gets back, failures mid-stream and a
Stop in the middle of a reply (which must close the provider's response)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import anthropic
import anyio
import openai
import pytest
from anyio.abc import TaskStatus

from replayhub import ErrorType, Hub, State, Subscription, llm

from .conftest import HubFactory
from .llm_sdks import RecordedBody, anthropic_client, openai_client, sample

pytestmark = pytest.mark.parametrize("backend_kind", ["memory", "redis"])

StartReply = Callable[[RecordedBody], Awaitable[Any]]


async def openai_chat(body: RecordedBody) -> Any:
    return await openai_client(body).chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        stream=True,
        stream_options={"include_usage": True},
    )


async def openai_responses(body: RecordedBody) -> Any:
    return await openai_client(body).responses.create(
        model="gpt-4.1-mini", input="Weather in Paris?", stream=True
    )


async def anthropic_messages(body: RecordedBody) -> Any:
    return await anthropic_client(body).messages.create(
        model="claude-sonnet-5-5",
        max_tokens=1024,
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        stream=True,
    )


WEATHER_CALL = llm.ToolCall("call_Wx1", "get_weather", {"city": "Paris"})

# sample, how to start it, the reply it adds up to.
REPLIES: dict[str, tuple[str, StartReply, llm.Message]] = {
    "openai-chat": (
        "openai_chat_tool_usage.sse",
        openai_chat,
        llm.Message(
            message_id="chatcmpl-abc123",
            model="gpt-4o-mini-2024-07-18",
            text="Let me check the weather.",
            tool_calls=(WEATHER_CALL,),
            usage=llm.Usage(82, 17, 0, 0),
            finish_reason="tool-calls",
        ),
    ),
    "openai-responses": (
        "openai_responses_reasoning_text_tool.sse",
        openai_responses,
        llm.Message(
            message_id="resp_2",
            model="gpt-4.1-mini-2025-04-14",
            text="Let me check Paris.",
            reasoning="Need the weather tool.",
            tool_calls=(WEATHER_CALL,),
            usage=llm.Usage(40, 30, 18, 8),
            finish_reason="tool-calls",
        ),
    ),
    "anthropic": (
        "anthropic_thinking_text_tool.sse",
        anthropic_messages,
        llm.Message(
            message_id="msg_01A",
            model="claude-sonnet-5-5",
            text="Checking the weather in Paris.",
            reasoning="User wants weather; call tool.",
            tool_calls=(llm.ToolCall("toolu_01X", "get_weather", {"city": "Paris"}),),
            usage=llm.Usage(50, 89, None, 0),
            finish_reason="tool-calls",
        ),
    ),
}


async def typed_events(hub: Hub, session_id: str) -> list[llm.LLMEvent | object]:
    async with hub.subscribe(session_id) as events:
        return [item async for item in llm.read(events)]


@pytest.mark.parametrize("provider", sorted(REPLIES))
async def test_a_relayed_reply_is_stored_as_typed_events_and_read_back_whole(
    make_hub: HubFactory, provider: str
) -> None:
    name, start, expected = REPLIES[provider]
    body = RecordedBody(sample(name), piece=37)
    async with make_hub() as hub:
        async with hub.produce("chat") as stream:
            message = await llm.relay(stream, await start(body))
        assert message == expected
        assert body.closed.is_set()
        collected = await llm.collect(hub, "chat")
        assert collected.outcome is not None
        assert collected.outcome.state is State.DONE
        assert replace(collected, outcome=None) == expected
        assert collected.outcome.metadata["usage"] == expected.usage.to_json()  # type: ignore[union-attr]
        items = await typed_events(hub, "chat")
    # Every block is opened before its pieces and closed after them, once.
    starts = [item for item in items if isinstance(item, llm.ContentStart)]
    ends = [item for item in items if isinstance(item, llm.ContentEnd)]
    assert [start.index for start in starts] == [end.index for end in ends]
    assert [start.index for start in starts] == list(range(len(starts)))
    open_block: llm.ContentStart | None = None
    for item in items:
        if isinstance(item, llm.ContentStart):
            assert open_block is None
            open_block = item
        elif isinstance(item, llm.ContentEnd):
            assert open_block is not None
            assert open_block.index == item.index
            open_block = None
        elif isinstance(item, llm.TextDelta | llm.ReasoningDelta | llm.ToolCallDelta):
            kind = {
                llm.TextDelta: "text",
                llm.ReasoningDelta: "reasoning",
                llm.ToolCallDelta: "tool-call",
            }[type(item)]
            assert open_block is not None, item
            assert open_block.type == kind, item
    assert isinstance(items[0], llm.MessageStart)
    assert items[-2:] == [expected.usage, llm.MessageStop("tool-calls")]
    deltas = "".join(item.arguments_delta for item in items if isinstance(item, llm.ToolCallDelta))
    assert llm.ToolCall(WEATHER_CALL.id, "get_weather", deltas).arguments != {}  # streamed
    assert deltas.replace(" ", "") == '{"city":"Paris"}'


async def test_the_anthropic_relay_sends_this_exact_sequence(make_hub: HubFactory) -> None:
    async with make_hub() as hub:
        async with hub.produce("chat") as stream:
            await llm.relay(
                stream, await anthropic_messages(RecordedBody(sample(REPLIES["anthropic"][0])))
            )
        items = await typed_events(hub, "chat")
    assert items == [
        llm.MessageStart("msg_01A", "claude-sonnet-5-5"),
        llm.ContentStart(0, "reasoning"),
        llm.ReasoningDelta("User wants weather; call tool."),
        llm.ContentEnd(0),
        llm.ContentStart(1, "text"),
        llm.TextDelta("Checking the weather"),
        llm.TextDelta(" in Paris."),
        llm.ContentEnd(1),
        llm.ContentStart(2, "tool-call"),
        llm.ToolCallStart("toolu_01X", "get_weather"),
        llm.ToolCallDelta("toolu_01X", '{"city": "Pa'),
        llm.ToolCallDelta("toolu_01X", 'ris"}'),
        llm.ToolCall("toolu_01X", "get_weather", {"city": "Paris"}),
        llm.ContentEnd(2),
        llm.Usage(50, 89, None, 0),
        llm.MessageStop("tool-calls"),
    ]


# sample, how to start it, what it raises, the text stored before, the category.
FAILURES: dict[str, tuple[str, StartReply, type[Exception], str, ErrorType]] = {
    "openai-chat": (
        "openai_chat_error_midstream.sse",
        openai_chat,
        openai.APIError,
        "Hi",
        ErrorType.API,
    ),
    "openai-responses": (
        "openai_responses_failed_midstream.sse",
        openai_responses,
        llm.StreamError,
        "Partial",
        ErrorType.RATE_LIMIT,
    ),
    "anthropic": (
        "anthropic_error_midstream.sse",
        anthropic_messages,
        anthropic.APIStatusError,
        "",
        ErrorType.OVERLOADED,
    ),
}


@pytest.mark.parametrize("provider", sorted(REPLIES))
async def test_a_reply_arriving_faster_than_storage_takes_it_is_stored_whole_and_in_order(
    make_hub: HubFactory, provider: str
) -> None:
    """The relay queues each token without a checkpoint while the buffer
    has room, and waits for room when it has none: a whole reply in one
    piece, through a buffer of two events, loses or reorders nothing."""
    name, start, expected = REPLIES[provider]
    data = sample(name)
    body = RecordedBody(data, piece=len(data))
    seen: list[object] = []

    async def read(events: Subscription) -> None:
        async with events:
            async for item in llm.read(events):
                seen.append(item)

    async with make_hub(buffer_size=2) as hub:
        async with anyio.create_task_group() as tasks:
            async with hub.produce("chat") as stream:
                tasks.start_soon(read, hub.subscribe("chat"))  # live, from the start
                message = await llm.relay(stream, await start(body))
        assert message == expected
        collected = await llm.collect(hub, "chat")
        assert replace(collected, outcome=None) == expected
        assert seen == await typed_events(hub, "chat")


@pytest.mark.parametrize("provider", sorted(FAILURES))
async def test_an_error_in_the_middle_of_a_stream_fails_the_session_with_its_category(
    make_hub: HubFactory, provider: str
) -> None:
    name, start, raises, text_before, error_type = FAILURES[provider]
    body = RecordedBody(sample(name))
    async with make_hub() as hub:
        with pytest.raises(raises) as raised:
            async with hub.produce("chat") as stream:
                await llm.relay(stream, await start(body))
        assert body.closed.is_set()
        collected = await llm.collect(hub, "chat")
    assert collected.outcome is not None
    assert collected.outcome.state is State.FAILED
    assert collected.outcome.error_type is error_type
    assert type(raised.value).__name__ in (collected.outcome.error or "")
    assert collected.text == text_before
    assert collected.finish_reason is None


@pytest.mark.parametrize("provider", sorted(REPLIES))
async def test_a_stream_cut_short_fails_as_network_with_what_arrived(
    make_hub: HubFactory, provider: str
) -> None:
    name, start, expected = REPLIES[provider]
    data = sample(name)
    # Everything up to the first text, then the connection ends cleanly.
    cut = data.index(b"\n\n", data.index(expected.text[:6].encode())) + 2
    async with make_hub() as hub:
        with pytest.raises(llm.StreamError, match="ended before"):
            async with hub.produce("chat") as stream:
                await llm.relay(stream, await start(RecordedBody(data[:cut])))
        collected = await llm.collect(hub, "chat")
    assert collected.outcome is not None
    assert collected.outcome.state is State.FAILED
    assert collected.outcome.error_type is ErrorType.NETWORK
    assert collected.text
    assert expected.text.startswith(collected.text)


# The text a provider has sent when it stalls in the middle of the reply.
PARTIAL = {
    "openai-chat": "Let me check",
    "openai-responses": "Let me ",
    "anthropic": "Checking the weather",
}


@pytest.mark.parametrize("provider", sorted(REPLIES))
async def test_stop_in_the_middle_of_a_relay_closes_the_response_and_keeps_the_partial_reply(
    make_hub: HubFactory, provider: str
) -> None:
    name, start, expected = REPLIES[provider]
    data = sample(name)
    partial = PARTIAL[provider]
    stall_at = data.index(b"\n\n", data.index(partial.encode())) + 2
    body = RecordedBody(data, stall_after=stall_at)
    async with make_hub(lease_ttl=5.0) as hub:
        async with anyio.create_task_group() as tg:

            async def produce(*, task_status: TaskStatus[None]) -> None:
                async with hub.produce("chat") as stream:
                    task_status.started()
                    await llm.relay(stream, await start(body))
                    raise AssertionError("the relay must not return: it was stopped")

            await tg.start(produce)
            # Stop once the partial text is readable.
            with anyio.fail_after(10):
                async with hub.subscribe("chat") as events:
                    seen = ""
                    async for item in llm.read(events):
                        if isinstance(item, llm.TextDelta):
                            seen += item.text
                            if seen == partial:
                                break
            info = await hub.cancel("chat", wait=5)
        assert info is not None
        assert info.state is State.CANCELLED
        assert body.closed.is_set()
        collected = await llm.collect(hub, "chat")
    assert collected.outcome is not None
    assert collected.outcome.state is State.CANCELLED
    assert collected.text == partial
    assert collected.reasoning == expected.reasoning
    assert collected.finish_reason is None


async def test_relays_into_one_session_add_up_their_usage_in_its_metadata(
    make_hub: HubFactory,
) -> None:
    name, start, expected = REPLIES["openai-chat"]
    async with make_hub() as hub:
        async with hub.produce("chat", metadata={"usage": "not ours"}) as stream:
            await llm.relay(stream, await start(RecordedBody(sample(name))))
            assert stream.metadata["usage"] == expected.usage.to_json()  # type: ignore[union-attr]
            await llm.relay(stream, await start(RecordedBody(sample(name))))
        info = await hub.info("chat")
    assert info is not None
    assert expected.usage is not None
    assert info.metadata["usage"] == (expected.usage + expected.usage).to_json()


async def test_relaying_something_that_is_not_an_sdk_stream_fails_before_sending(
    make_hub: HubFactory,
) -> None:
    async def words() -> Any:
        yield "not a chunk"

    async with make_hub() as hub:
        with pytest.raises(TypeError, match="does not know stream items of type str"):
            async with hub.produce("chat") as stream:
                await llm.relay(stream, words())
        info = await hub.info("chat")
    assert info is not None
    assert info.events == 0
    assert info.state is State.FAILED
