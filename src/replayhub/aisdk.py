"""Serving sessions to AI SDK chat front ends (``useChat``, ``Chat``).

The AI SDK's client reads a reply as a *UI message stream*: Server-Sent Events
whose ``data:`` lines are JSON parts (``start``, ``text-start``,
``text-delta``, ``tool-input-available``, ``finish``, ...), ended by
``data: [DONE]``. :func:`ui_message_stream_response` serves a session in that
protocol from its first event, then live, translating the typed events of
:mod:`replayhub.llm`; the client's resume (``GET {api}/{chatId}/stream``)
gets the whole message replayed, which is what it expects.

Needs the ``web`` extra (Starlette). Works on asyncio (uvicorn) and Trio
(Hypercorn's trio worker).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ._errors import ReplayHubError
from ._events import Event, Outcome, State
from ._hub import Hub
from ._subscription import Subscription
from .asgi import SubscriptionResponse
from .llm import (
    ContentEnd,
    ContentStart,
    Data,
    Error,
    MessageStart,
    MessageStop,
    ReasoningDelta,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolCallStart,
    ToolResult,
    Usage,
    decode,
)

HEADERS = {
    "cache-control": "no-cache",
    "x-vercel-ai-ui-message-stream": "v1",
    "x-accel-buffering": "no",
}
"""The response headers the AI SDK's client expects (with the SSE media type)."""

Part = dict[str, Any]


class UIMessageEncoder:
    """Turns one session's events, in order, into UI message stream parts.

    Every part gets the opening part the client requires before it: a text
    or reasoning run its ``*-start`` (and ``*-end`` when the run ends), a
    tool call's argument deltas its ``tool-input-start``. Usage goes into the
    message metadata; events outside the LLM vocabulary become
    ``data-<name>`` parts.

    :param message_id: the ``messageId`` of the ``start`` part when the
        session's first event is not a :class:`~replayhub.llm.MessageStart`
        with an id (the same on every replay, so a resumed client replaces the
        message it has).
    """

    def __init__(self, message_id: str) -> None:
        self._default_id = message_id
        self._started = False
        self._step_open = False
        self._open_run: tuple[str, str] | None = None  # ("text" | "reasoning", part id)
        # While a run is open, its deltas' event name and their SSE message
        # up to the delta's text (see encode).
        self._open_delta: tuple[str, str] | None = None
        self._runs = 0
        self._calls: dict[str, str] = {}  # tool call id -> tool name, once started
        self._usage: Usage | None = None
        self._finish_reason = "stop"

    def parts(self, event: Event) -> list[Part]:
        """The parts for one stored event."""
        item = decode(event)
        parts = self._start(item)
        match item:
            case TextDelta(text=text):
                parts += self._run("text")
                assert self._open_run is not None
                parts.append({"type": "text-delta", "id": self._open_run[1], "delta": text})
            case ReasoningDelta(text=text):
                parts += self._run("reasoning")
                assert self._open_run is not None
                parts.append({"type": "reasoning-delta", "id": self._open_run[1], "delta": text})
            case ContentStart() | ContentEnd():
                parts += self._end_run()
            case ToolCallStart(id=call_id, name=name):
                parts += self._end_run()
                self._calls[call_id] = name
                parts.append({"type": "tool-input-start", "toolCallId": call_id, "toolName": name})
            case ToolCallDelta(id=call_id, arguments_delta=delta) if call_id in self._calls:
                parts.append(
                    {"type": "tool-input-delta", "toolCallId": call_id, "inputTextDelta": delta}
                )
            case ToolCall(id=call_id, name=name, arguments=arguments):
                parts += self._end_run()
                self._calls[call_id] = name
                parts.append(
                    {
                        "type": "tool-input-available",
                        "toolCallId": call_id,
                        "toolName": name,
                        "input": arguments,
                    }
                )
            case ToolResult(id=call_id, output=output, is_error=is_error) if call_id in self._calls:
                parts += self._end_run()
                if is_error:
                    text = output if isinstance(output, str) else json.dumps(output)
                    parts.append(
                        {"type": "tool-output-error", "toolCallId": call_id, "errorText": text}
                    )
                else:
                    parts.append(
                        {"type": "tool-output-available", "toolCallId": call_id, "output": output}
                    )
            case Usage():
                self._usage = item if self._usage is None else self._usage + item
                parts.append(
                    {"type": "message-metadata", "messageMetadata": {"usage": _usage(self._usage)}}
                )
            case MessageStop(finish_reason=reason):
                parts += self._end_step()
                self._finish_reason = reason
            case Data(name=name, data=data, id=part_id):
                parts.append(_data_part(name, data, part_id))
            case Error(message=message, type=error_type):
                parts.append(
                    _data_part("error", {"type": error_type.value, "message": message}, None)
                )
            case Event():
                parts.append(_data_part(event.event, _json_data(event.data), None))
            case _:
                pass  # a delta of a call the reader never saw start: the complete call follows
        return parts

    def encode(self, event: Event) -> str:
        """The SSE messages of :meth:`parts` for one event, as the client reads them.

        A delta of the text or reasoning run already open, nearly every event
        of a reply, is written without building its part (5.6 us per event
        per reader through :meth:`parts` and :func:`encode_part`, measured;
        0.4 us this way): the same text.
        """
        delta = self._open_delta
        if delta is not None and event.event == delta[0] and event.data.__class__ is str:
            return f"{delta[1]}{_json_string(event.data)}}}\n\n"
        return "".join([encode_part(part) for part in self.parts(event)])

    def end(self, outcome: Outcome) -> list[Part]:
        """The parts that end the stream: ``finish``, ``error`` or ``abort``."""
        parts = self._start(None)
        if outcome.state is State.DONE:
            parts += self._end_step()
            parts.append({"type": "finish", "finishReason": self._finish_reason})
        elif outcome.state is State.FAILED:
            kind = outcome.error_type.value if outcome.error_type is not None else "internal"
            parts.append({"type": "error", "errorText": f"{kind}: {outcome.error or 'failed'}"})
        else:
            parts.append({"type": "abort", "reason": outcome.state.value})
        return parts

    def _start(self, item: object) -> list[Part]:
        """``start`` before the first part, and a step around the content."""
        parts: list[Part] = []
        if not self._started:
            self._started = True
            start: Part = {"type": "start", "messageId": self._default_id}
            if isinstance(item, MessageStart):
                start["messageId"] = item.message_id or self._default_id
                if item.model is not None:
                    start["messageMetadata"] = {"model": item.model}
            parts.append(start)
        elif isinstance(item, MessageStart):
            parts += self._end_step()  # a second model call: a new step
        if item is not None and not self._step_open:
            self._step_open = True
            parts.append({"type": "start-step"})
        return parts

    def _run(self, kind: str) -> list[Part]:
        if self._open_run is not None and self._open_run[0] == kind:
            return []
        parts = self._end_run()
        self._runs += 1
        part_id = f"{kind}-{self._runs}"
        self._open_run = (kind, part_id)
        self._open_delta = (
            f"{kind}-delta",
            f'data: {{"type":"{kind}-delta","id":{_json_string(part_id)},"delta":',
        )
        parts.append({"type": f"{kind}-start", "id": part_id})
        return parts

    def _end_run(self) -> list[Part]:
        if self._open_run is None:
            return []
        (kind, part_id), self._open_run = self._open_run, None
        self._open_delta = None
        return [{"type": f"{kind}-end", "id": part_id}]

    def _end_step(self) -> list[Part]:
        parts = self._end_run()
        if self._step_open:
            self._step_open = False
            parts.append({"type": "finish-step"})
        return parts


def _usage(usage: Usage) -> dict[str, int]:
    """The AI SDK's ``LanguageModelUsage`` field names."""
    result = {
        "inputTokens": usage.input_tokens,
        "outputTokens": usage.output_tokens,
        "totalTokens": usage.total_tokens,
    }
    if usage.reasoning_tokens is not None:
        result["reasoningTokens"] = usage.reasoning_tokens
    if usage.cached_input_tokens is not None:
        result["cachedInputTokens"] = usage.cached_input_tokens
    return result


def _data_part(name: str, data: object, part_id: str | None) -> Part:
    part: Part = {"type": f"data-{name}", "data": data}
    if part_id is not None:
        part["id"] = part_id
    return part


def _json_data(data: object) -> object:
    if isinstance(data, bytes):
        return {"base64": base64.b64encode(data).decode()}
    return data


def encode_part(part: Part) -> str:
    """One part as the SSE message the client reads."""
    return f"data: {json.dumps(part, ensure_ascii=False, separators=(',', ':'))}\n\n"


#: A str as ``json.dumps(..., ensure_ascii=False)`` writes it inside a value.
_json_string: Callable[[str], str] = json.encoder.encode_basestring


DONE = "data: [DONE]\n\n"


class UIMessageStreamResponse(SubscriptionResponse):
    """A UI message stream of one session, from its first event, then live.

    Ends with ``finish`` (``done``), ``error`` (``failed``: the category and
    message), or ``abort`` (``cancelled``, ``abandoned``), then ``[DONE]``;
    an ``error`` part too if the session cannot be read on (removed, events
    lost, storage unreachable for longer than the lease). Sends an SSE
    comment every ``ping_interval`` seconds while idle. A client that
    disconnects ends only its own response; the reply goes on.
    """

    def __init__(
        self,
        hub: Hub,
        session_id: str,
        *,
        ping_interval: float = 15.0,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(
            hub,
            session_id,
            after=None,
            batch_replay=False,
            ping_interval=ping_interval,
            headers={**HEADERS, **(headers or {})},
        )
        self._encoder: UIMessageEncoder

    def _opened(self, events: Subscription) -> None:
        self._encoder = UIMessageEncoder(f"{self._session_id}:{events.generation}")

    def _encode_batch(self, batch: list[Event]) -> str:
        encode = self._encoder.encode
        return "".join([encode(event) for event in batch])

    def _encode_end(self, outcome: Outcome) -> str:
        return "".join(encode_part(part) for part in self._encoder.end(outcome)) + DONE

    def _encode_failure(self, error: ReplayHubError) -> str:
        return encode_part({"type": "error", "errorText": str(error)}) + DONE


async def ui_message_stream_response(
    hub: Hub,
    session_id: str,
    request: Request,
    *,
    serve_finished: bool = False,
    ping_interval: float = 15.0,
) -> Response:
    """The response to the AI SDK client's request for ``session_id``'s reply.

    For the resume request (``GET {api}/{chatId}/stream``): ``204 No Content``
    when the session has no live reply ("nothing to resume"), else the whole
    reply replayed from its start, then live, as a
    :class:`UIMessageStreamResponse`. A POST handler that has just started a
    reply returns this with ``serve_finished=True``, so the first request
    and a resume read the same thing even if the reply is already over.

    ``request`` is the request being answered: its client disconnecting ends
    only this response.

    :raises ~replayhub.InvalidInputError: for a bad session id.
    :raises ~replayhub.HubClosedError: if the hub is not open.
    :raises ~replayhub.BackendUnavailableError: if storage cannot be reached
        (the server answers 500).
    """
    info = await hub.info(session_id)
    if info is None or (info.state is not State.LIVE and not serve_finished):
        return Response(status_code=204)
    return UIMessageStreamResponse(hub, session_id, ping_interval=ping_interval)
