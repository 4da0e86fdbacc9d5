"""Relaying a provider SDK's stream into a producer, as typed events."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterable
from typing import Any

import anyio

from .._events import JSON, SendData
from .._producer import Producer
from ._message import Message, MessageBuilder
from ._providers import adapter_for
from ._vocabulary import StreamError, TextDelta, Usage, usage_from_json

#: How long closing the provider's response may take when the relay ends.
_CLOSE_TIMEOUT = 5.0


async def relay(stream: Producer, reply: AsyncIterable[Any]) -> Message:
    """Send a provider's streamed reply as typed events, as it arrives.

    ``reply`` is what the SDK returns with ``stream=True``: an OpenAI Chat
    Completions stream (pass ``stream_options={"include_usage": True}`` for
    usage), an OpenAI Responses stream, or an Anthropic Messages stream. Text
    and reasoning go out as deltas, each content block between
    :class:`ContentStart` and :class:`ContentEnd`, tool calls as
    :class:`ToolCallStart`, argument deltas and one complete :class:`ToolCall`
    with parsed arguments, then :class:`Usage` and :class:`MessageStop` with
    the normalised finish reason. The usage is also added to the session's
    metadata under ``"usage"`` (summed over the relays of one session).

    Call it inside ``async with hub.produce(...) as stream:``. A cancel
    request, or any cancellation, stops reading at once and closes the
    provider's response (so the provider stops generating); what was received
    is stored and the session ends ``cancelled``. The response is closed on
    every other exit too. Tokens are queued as they come, waiting only while
    the producer's buffer is full: the wait for the provider's next chunk is
    where other tasks run and a cancellation lands.

    :returns: the reply, assembled.
    :raises StreamError: if the stream ended before its last event
        (``network``) or reported a failure as an event; the session then
        ends ``failed`` with that category.
    :raises TypeError: if ``reply`` is not a stream this relay knows.
    :raises Exception: what the SDK raises (a mid-stream error event raises
        in the SDK), unchanged; the session's outcome gets its category.
    """
    builder = MessageBuilder()
    try:
        adapter = None
        async for item in reply:
            if adapter is None:
                adapter = adapter_for(item)
                if adapter is None:
                    raise TypeError(
                        f"relay() does not know stream items of type {type(item).__name__}; "
                        "pass an OpenAI or Anthropic SDK stream (stream=True)"
                    )
            for event in adapter.translate(item):
                if event.__class__ is TextDelta:  # the hot path: no second object
                    await _send(stream, event.text, "text-delta")
                else:
                    await _send(stream, event)
                builder.add(event)
        if adapter is None or not adapter.finished:
            raise StreamError("the provider's stream ended before the reply did", type="network")
        for event in adapter.finish():
            await stream.send(event)
            builder.add(event)
    finally:
        with anyio.move_on_after(_CLOSE_TIMEOUT, shield=True):
            await _close(reply)
    message = builder.message()
    if message.usage is not None:
        await stream.set_metadata(
            {"usage": _add_usage(stream.metadata.get("usage"), message.usage)}
        )
    return message


async def _send(stream: Producer, data: SendData, event: str = "message") -> None:
    """Queue an event, waiting only while the producer's buffer is full.

    Not a checkpoint of its own, unlike :meth:`Producer.send`: the relay
    awaits the provider's next chunk between tokens, where other tasks run
    and a cancellation lands, so a checkpoint per token would only cost
    each token one more pass of the event loop.
    """
    try:
        stream.send_nowait(data, event=event)
    except anyio.WouldBlock:
        await stream.send(data, event=event)


async def _close(reply: object) -> None:
    """Close the SDK stream (and with it the HTTP response)."""
    for name in ("close", "aclose"):
        method = getattr(reply, name, None)
        if method is not None:
            result = method()
            if inspect.isawaitable(result):
                await result
            return


def _add_usage(stored: JSON, usage: Usage) -> JSON:
    earlier = usage_from_json(stored)  # an earlier relay's; anything else is replaced
    return (usage if earlier is None else earlier + usage).to_json()
