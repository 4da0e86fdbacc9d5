"""Translating the OpenAI and Anthropic SDKs' stream items into typed events.

Duck-typed on the items' documented fields, so neither SDK is imported: one
adapter per stream shape (OpenAI Chat Completions chunks, OpenAI Responses
events, Anthropic Messages events), each a small state machine that turns one
item into zero or more typed events and, at the end, closes what is open.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from .._error_types import ErrorType
from .._events import JSON
from ._vocabulary import (
    ContentEnd,
    ContentStart,
    ContentType,
    FinishReason,
    LLMEvent,
    MessageStart,
    MessageStop,
    ReasoningDelta,
    StreamError,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolCallStart,
    Usage,
)

_OPENAI_FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool-calls",
    "function_call": "tool-calls",
    "content_filter": "content-filter",
}
_ANTHROPIC_FINISH: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool-calls",
    "refusal": "content-filter",
}
_RESPONSES_INCOMPLETE: dict[str, FinishReason] = {
    "max_output_tokens": "length",
    "content_filter": "content-filter",
}
_ANTHROPIC_TYPES = frozenset(
    {
        "message_start",
        "message_delta",
        "message_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "ping",
    }
)


def parse_arguments(text: str) -> JSON:
    """A tool call's arguments: the parsed JSON; ``{}`` for none; the raw
    text if the model wrote invalid JSON (kept rather than lost)."""
    if not text.strip():
        return {}
    try:
        parsed: JSON = json.loads(text)
    except ValueError:
        return text
    return parsed


class _Blocks:
    """Numbers the reply's content blocks and keeps at most one open."""

    def __init__(self) -> None:
        self.count = 0
        self.open: tuple[int, ContentType] | None = None

    def start(self, kind: ContentType) -> list[LLMEvent]:
        events = self.end()
        self.open = (self.count, kind)
        self.count += 1
        events.append(ContentStart(self.open[0], kind))
        return events

    def ensure(self, kind: ContentType) -> list[LLMEvent]:
        if self.open is not None and self.open[1] == kind:
            return []
        return self.start(kind)

    def end(self) -> list[LLMEvent]:
        if self.open is None:
            return []
        index, self.open = self.open[0], None
        return [ContentEnd(index)]


class _PendingCall:
    def __init__(self, call_id: str, name: str) -> None:
        self.id = call_id
        self.name = name
        self.arguments: list[str] = []

    def complete(self) -> ToolCall:
        return ToolCall(self.id, self.name, parse_arguments("".join(self.arguments)))


class Adapter:
    """One provider stream's translation."""

    finished = False
    """Whether the stream's own last item arrived (else it was cut short)."""

    def __init__(self) -> None:
        self.blocks = _Blocks()
        self.usage: Usage | None = None
        self.finish_reason: FinishReason | None = None

    def translate(self, item: Any) -> Iterator[LLMEvent]:
        raise NotImplementedError

    def finish(self) -> Iterator[LLMEvent]:
        """What closes the reply after the provider's last item: the open
        block, the usage, the stop."""
        yield from self.blocks.end()
        if self.usage is not None:
            yield self.usage
        if self.finish_reason is not None:
            yield MessageStop(self.finish_reason)


class OpenAIChatAdapter(Adapter):
    """``chat.completions.create(stream=True)``: choice 0 of each chunk.

    Reasoning comes from ``delta.reasoning_content`` or ``delta.reasoning``,
    which OpenAI-compatible servers of reasoning models send.
    """

    def __init__(self) -> None:
        super().__init__()
        self._started = False
        self._calls: dict[int, _PendingCall] = {}
        self._current_call: _PendingCall | None = None

    def translate(self, item: Any) -> Iterator[LLMEvent]:
        if not self._started:
            self._started = True
            yield MessageStart(getattr(item, "id", None), getattr(item, "model", None))
        usage = getattr(item, "usage", None)
        if usage is not None:
            self.usage = Usage(
                usage.prompt_tokens or 0,
                usage.completion_tokens or 0,
                _nested(usage, "completion_tokens_details", "reasoning_tokens"),
                _nested(usage, "prompt_tokens_details", "cached_tokens"),
            )
        for choice in getattr(item, "choices", None) or ():
            if choice.index != 0:
                continue
            yield from self._delta(choice.delta)
            if choice.finish_reason is not None:
                self.finish_reason = _OPENAI_FINISH.get(choice.finish_reason, "other")
                self.finished = True

    def _delta(self, delta: Any) -> Iterator[LLMEvent]:
        if delta is None:
            return
        reasoning = getattr(delta, "reasoning_content", None) or getattr(delta, "reasoning", None)
        if isinstance(reasoning, str) and reasoning:
            yield from self._close_call()
            yield from self.blocks.ensure("reasoning")
            yield ReasoningDelta(reasoning)
        text = (delta.content or "") + (getattr(delta, "refusal", None) or "")
        if text:
            yield from self._close_call()
            yield from self.blocks.ensure("text")
            yield TextDelta(text)
        for piece in delta.tool_calls or ():
            call = self._calls.get(piece.index)
            function = piece.function
            if call is None:
                yield from self._close_call()
                yield from self.blocks.start("tool-call")
                call = self._calls[piece.index] = _PendingCall(
                    piece.id or f"call_{piece.index}", (function and function.name) or ""
                )
                self._current_call = call
                yield ToolCallStart(call.id, call.name)
            arguments = function.arguments if function is not None else None
            if arguments:
                call.arguments.append(arguments)
                yield ToolCallDelta(call.id, arguments)

    def _close_call(self) -> Iterator[LLMEvent]:
        if self._current_call is not None:
            call, self._current_call = self._current_call, None
            yield call.complete()

    def finish(self) -> Iterator[LLMEvent]:
        yield from self._close_call()
        yield from super().finish()


class OpenAIResponsesAdapter(Adapter):
    """``responses.create(stream=True)`` events (``response.*``)."""

    def __init__(self) -> None:
        super().__init__()
        self._calls: dict[str, _PendingCall] = {}  # by output item id
        self._called = False

    def translate(self, item: Any) -> Iterator[LLMEvent]:
        kind = item.type
        if kind == "response.created":
            yield MessageStart(item.response.id, item.response.model)
        elif kind in ("response.output_text.delta", "response.refusal.delta"):
            yield from self.blocks.ensure("text")
            yield TextDelta(item.delta)
        elif kind in ("response.reasoning_summary_text.delta", "response.reasoning_text.delta"):
            yield from self.blocks.ensure("reasoning")
            yield ReasoningDelta(item.delta)
        elif kind == "response.output_item.added":
            output = item.item
            if output.type == "function_call":
                yield from self.blocks.start("tool-call")
                call = self._calls[output.id] = _PendingCall(output.call_id, output.name)
                self._called = True
                yield ToolCallStart(call.id, call.name)
            elif output.type == "reasoning":
                yield from self.blocks.start("reasoning")
        elif kind == "response.function_call_arguments.delta":
            pending = self._calls.get(item.item_id)
            if pending is not None and item.delta:
                pending.arguments.append(item.delta)
                yield ToolCallDelta(pending.id, item.delta)
        elif kind == "response.output_item.done":
            output = item.item
            done = self._calls.pop(output.id, None)
            if done is not None:
                arguments = getattr(output, "arguments", None)
                if isinstance(arguments, str):  # the final text wins over the pieces
                    done.arguments = [arguments]
                yield done.complete()
            yield from self.blocks.end()
        elif kind in ("response.completed", "response.incomplete"):
            self.finished = True
            response = item.response
            usage = response.usage
            if usage is not None:
                self.usage = Usage(
                    usage.input_tokens or 0,
                    usage.output_tokens or 0,
                    _nested(usage, "output_tokens_details", "reasoning_tokens"),
                    _nested(usage, "input_tokens_details", "cached_tokens"),
                )
            if kind == "response.completed":
                self.finish_reason = "tool-calls" if self._called else "stop"
            else:
                reason = getattr(response.incomplete_details, "reason", None)
                self.finish_reason = _RESPONSES_INCOMPLETE.get(reason or "", "other")
        elif kind == "response.failed":
            error = item.response.error
            raise StreamError(
                getattr(error, "message", None) or "the response failed",
                type=_responses_error_type(getattr(error, "code", None)),
            )
        elif kind == "error":
            raise StreamError(
                getattr(item, "message", None) or "the response failed",
                type=_responses_error_type(getattr(item, "code", None)),
            )


class AnthropicAdapter(Adapter):
    """``messages.create(stream=True)`` raw events (``message_start`` ...)."""

    def __init__(self) -> None:
        super().__init__()
        self._calls: dict[int, _PendingCall] = {}  # by content block index
        self._blocks: dict[int, int] = {}  # the provider's index -> ours
        self._input_tokens = 0
        self._cached: int | None = None
        self._output_tokens = 0

    def translate(self, item: Any) -> Iterator[LLMEvent]:
        kind = item.type
        if kind == "content_block_delta":
            delta = item.delta
            if delta.type == "text_delta":
                yield TextDelta(delta.text)
            elif delta.type == "thinking_delta":
                yield ReasoningDelta(delta.thinking)
            elif delta.type == "input_json_delta":
                call = self._calls.get(item.index)
                if call is not None and delta.partial_json:
                    call.arguments.append(delta.partial_json)
                    yield ToolCallDelta(call.id, delta.partial_json)
        elif kind == "content_block_start":
            block = item.content_block
            if block.type == "text":
                yield from self.blocks.start("text")
            elif block.type in ("thinking", "redacted_thinking"):
                yield from self.blocks.start("reasoning")
            elif block.type in ("tool_use", "server_tool_use"):
                yield from self.blocks.start("tool-call")
                call = self._calls[item.index] = _PendingCall(block.id, block.name)
                yield ToolCallStart(call.id, call.name)
            else:
                return
            assert self.blocks.open is not None
            self._blocks[item.index] = self.blocks.open[0]
        elif kind == "content_block_stop":
            call = self._calls.pop(item.index, None)
            if call is not None:
                yield call.complete()
            if item.index in self._blocks:
                del self._blocks[item.index]
                yield from self.blocks.end()
        elif kind == "message_start":
            message = item.message
            usage = message.usage
            self._input_tokens = usage.input_tokens or 0
            self._cached = getattr(usage, "cache_read_input_tokens", None)
            self._output_tokens = usage.output_tokens or 0
            yield MessageStart(message.id, message.model)
        elif kind == "message_delta":
            reason = item.delta.stop_reason
            if reason is not None:
                self.finish_reason = _ANTHROPIC_FINISH.get(reason, "other")
            if item.usage is not None and item.usage.output_tokens is not None:
                self._output_tokens = item.usage.output_tokens  # cumulative
        elif kind == "message_stop":
            self.finished = True
            self.usage = Usage(self._input_tokens, self._output_tokens, None, self._cached)
            self.finish_reason = self.finish_reason or "other"


def adapter_for(item: Any) -> Adapter | None:
    """The adapter for a stream whose first item is ``item``, or ``None``."""
    if getattr(item, "object", None) == "chat.completion.chunk":
        return OpenAIChatAdapter()
    kind = getattr(item, "type", None)
    if isinstance(kind, str):
        if kind.startswith("response.") or kind == "error":
            return OpenAIResponsesAdapter()
        if kind in _ANTHROPIC_TYPES:
            return AnthropicAdapter()
    return None


def _nested(obj: Any, *names: str) -> int | None:
    for name in names:
        obj = getattr(obj, name, None)
        if obj is None:
            return None
    return obj if isinstance(obj, int) else None


def _responses_error_type(code: object) -> ErrorType:
    if code in ("rate_limit_exceeded", "insufficient_quota"):
        return ErrorType.RATE_LIMIT
    if code == "server_is_overloaded" or code == "slow_down":
        return ErrorType.OVERLOADED
    return ErrorType.API
