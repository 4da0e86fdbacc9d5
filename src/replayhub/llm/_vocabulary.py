"""The typed LLM events and their wire form.

Each typed event is stored as an ordinary replayhub event with a stable name,
so a browser's ``EventSource``, the SSE helper and readers in other languages
need nothing new. Text and reasoning deltas carry their raw text (the hot
path stays a string); every other event carries a small JSON object with the
field names of its Python type. :func:`decode` turns a stored event back into
its typed value, and gives any other event back untouched.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias, get_args

from .._error_types import ErrorType, check_error_type
from .._errors import InvalidInputError, ReplayHubError
from .._events import JSON, Event

FinishReason: TypeAlias = Literal[
    "stop", "length", "tool-calls", "content-filter", "error", "other"
]
"""Why the model stopped, normalised across providers."""
ContentType: TypeAlias = Literal["text", "reasoning", "tool-call"]
"""What a content block holds."""

FINISH_REASONS: frozenset[str] = frozenset(get_args(FinishReason))
CONTENT_TYPES: frozenset[str] = frozenset(get_args(ContentType))
DATA_PREFIX = "data-"


class StreamError(ReplayHubError):
    """Raise it from a producer's block to fail the session with a category.

    ``raise llm.StreamError("quota exhausted", type="rate_limit") from exc``
    ends the session ``failed`` with that message and
    :attr:`~replayhub.Outcome.error_type`. The relays raise it too, when a
    provider's stream reports a failure as an event or ends before its last
    event (``network``).

    :raises ValueError: if ``type`` names no :class:`~replayhub.ErrorType`.
    """

    def __init__(self, message: str, *, type: ErrorType | str = ErrorType.API) -> None:
        super().__init__(message)
        self.error_type: ErrorType = check_error_type(type)


def _require(condition: bool, what: str) -> None:
    if not condition:
        raise InvalidInputError(what)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _optional_str(value: object) -> bool:
    return value is None or isinstance(value, str)


@dataclass(frozen=True, slots=True)
class MessageStart:
    """The reply begins: its id and the model that writes it, when known."""

    message_id: str | None = None
    model: str | None = None

    def __post_init__(self) -> None:
        _require(_optional_str(self.message_id), "MessageStart.message_id must be a str")
        _require(_optional_str(self.model), "MessageStart.model must be a str")

    def __replayhub_event__(self) -> tuple[str, object]:
        return "message-start", {"message_id": self.message_id, "model": self.model}


@dataclass(frozen=True, slots=True)
class MessageStop:
    """The reply is complete; ``finish_reason`` says why the model stopped."""

    finish_reason: FinishReason = "stop"

    def __post_init__(self) -> None:
        _require(
            self.finish_reason in FINISH_REASONS,
            f"finish_reason must be one of {sorted(FINISH_REASONS)}, not {self.finish_reason!r}",
        )

    def __replayhub_event__(self) -> tuple[str, object]:
        return "message-stop", {"finish_reason": self.finish_reason}


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A piece of the reply's text. Stored as the raw text."""

    text: str

    def __post_init__(self) -> None:
        _require(isinstance(self.text, str), "TextDelta.text must be a str")

    def __replayhub_event__(self) -> tuple[str, object]:
        return "text-delta", self.text


@dataclass(frozen=True, slots=True)
class ReasoningDelta:
    """A piece of the model's reasoning (thinking, a reasoning summary). Raw text."""

    text: str

    def __post_init__(self) -> None:
        _require(isinstance(self.text, str), "ReasoningDelta.text must be a str")

    def __replayhub_event__(self) -> tuple[str, object]:
        return "reasoning-delta", self.text


@dataclass(frozen=True, slots=True)
class ContentStart:
    """A content block begins: the ``index``-th of the reply (from 0)."""

    index: int
    type: ContentType

    def __post_init__(self) -> None:
        _require(_is_int(self.index) and self.index >= 0, "ContentStart.index must be an int >= 0")
        _require(
            self.type in CONTENT_TYPES,
            f"ContentStart.type must be one of {sorted(CONTENT_TYPES)}, not {self.type!r}",
        )

    def __replayhub_event__(self) -> tuple[str, object]:
        return "content-start", {"index": self.index, "type": self.type}


@dataclass(frozen=True, slots=True)
class ContentEnd:
    """The content block ``index`` is complete."""

    index: int

    def __post_init__(self) -> None:
        _require(_is_int(self.index) and self.index >= 0, "ContentEnd.index must be an int >= 0")

    def __replayhub_event__(self) -> tuple[str, object]:
        return "content-end", {"index": self.index}


@dataclass(frozen=True, slots=True)
class ToolCallStart:
    """The model begins a call of the tool ``name``; ``id`` names the call."""

    id: str
    name: str

    def __post_init__(self) -> None:
        _require(isinstance(self.id, str), "ToolCallStart.id must be a str")
        _require(isinstance(self.name, str), "ToolCallStart.name must be a str")

    def __replayhub_event__(self) -> tuple[str, object]:
        return "tool-call-start", {"id": self.id, "name": self.name}


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A piece of a tool call's arguments, as the JSON text the model writes."""

    id: str
    arguments_delta: str

    def __post_init__(self) -> None:
        _require(isinstance(self.id, str), "ToolCallDelta.id must be a str")
        _require(
            isinstance(self.arguments_delta, str), "ToolCallDelta.arguments_delta must be a str"
        )

    def __replayhub_event__(self) -> tuple[str, object]:
        return "tool-call-delta", {"id": self.id, "delta": self.arguments_delta}


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A complete tool call: ``arguments`` is the parsed JSON (the raw text
    when the model wrote invalid JSON)."""

    id: str
    name: str
    arguments: JSON

    def __post_init__(self) -> None:
        _require(isinstance(self.id, str), "ToolCall.id must be a str")
        _require(isinstance(self.name, str), "ToolCall.name must be a str")

    def __replayhub_event__(self) -> tuple[str, object]:
        return "tool-call", {"id": self.id, "name": self.name, "arguments": self.arguments}


@dataclass(frozen=True, slots=True)
class ToolResult:
    """The output of the tool call ``id``; ``is_error`` when the tool failed."""

    id: str
    output: JSON
    is_error: bool = False

    def __post_init__(self) -> None:
        _require(isinstance(self.id, str), "ToolResult.id must be a str")
        _require(isinstance(self.is_error, bool), "ToolResult.is_error must be a bool")

    def __replayhub_event__(self) -> tuple[str, object]:
        return "tool-result", {"id": self.id, "output": self.output, "is_error": self.is_error}


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens used; ``reasoning_tokens`` and ``cached_input_tokens`` when the
    provider reports them. Several in one reply (one per step) add up."""

    input_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int | None = None
    cached_input_tokens: int | None = None

    def __post_init__(self) -> None:
        for name in ("input_tokens", "output_tokens"):
            value = getattr(self, name)
            _require(_is_int(value) and value >= 0, f"Usage.{name} must be an int >= 0")
        for name in ("reasoning_tokens", "cached_input_tokens"):
            value = getattr(self, name)
            _require(
                value is None or (_is_int(value) and value >= 0),
                f"Usage.{name} must be an int >= 0 or None",
            )

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        def both(mine: int | None, theirs: int | None) -> int | None:
            return None if mine is None and theirs is None else (mine or 0) + (theirs or 0)

        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            both(self.reasoning_tokens, other.reasoning_tokens),
            both(self.cached_input_tokens, other.cached_input_tokens),
        )

    def to_json(self) -> dict[str, JSON]:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "cached_input_tokens": self.cached_input_tokens,
        }

    def __replayhub_event__(self) -> tuple[str, object]:
        return "usage", self.to_json()


@dataclass(frozen=True, slots=True)
class Error:
    """An error to show the reader, carrying ``{"type", "message"}``.

    Sending one does not end the session; raising does (the outcome then
    carries the message and category). Use it for errors the reply goes on
    after, such as a tool that failed.
    """

    message: str
    type: ErrorType = ErrorType.API

    def __post_init__(self) -> None:
        _require(isinstance(self.message, str), "Error.message must be a str")
        try:
            object.__setattr__(self, "type", check_error_type(self.type))
        except ValueError as exc:
            raise InvalidInputError(str(exc)) from None

    def __replayhub_event__(self) -> tuple[str, object]:
        return "error", {"type": self.type.value, "message": self.message}


@dataclass(frozen=True, slots=True)
class Data:
    """An app-defined part (sources, a chart, progress): stored as the event
    ``data-<name>`` carrying ``{"data": ..., "id": ...}``."""

    name: str
    data: JSON
    id: str | None = None

    def __post_init__(self) -> None:
        _require(isinstance(self.name, str) and self.name != "", "Data.name must be a str")
        _require(_optional_str(self.id), "Data.id must be a str or None")

    def __replayhub_event__(self) -> tuple[str, object]:
        payload: dict[str, object] = {"data": self.data}
        if self.id is not None:
            payload["id"] = self.id
        return DATA_PREFIX + self.name, payload


LLMEvent: TypeAlias = (
    MessageStart
    | MessageStop
    | TextDelta
    | ReasoningDelta
    | ContentStart
    | ContentEnd
    | ToolCallStart
    | ToolCallDelta
    | ToolCall
    | ToolResult
    | Usage
    | Error
    | Data
)
"""Any typed LLM event."""


def _object(data: object) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise TypeError("not an object")
    return data


_DECODERS: dict[str, Callable[[Any], LLMEvent]] = {
    "text-delta": TextDelta,
    "reasoning-delta": ReasoningDelta,
    "message-start": lambda d: MessageStart(_object(d)["message_id"], _object(d)["model"]),
    "message-stop": lambda d: MessageStop(_object(d)["finish_reason"]),
    "content-start": lambda d: ContentStart(_object(d)["index"], _object(d)["type"]),
    "content-end": lambda d: ContentEnd(_object(d)["index"]),
    "tool-call-start": lambda d: ToolCallStart(_object(d)["id"], _object(d)["name"]),
    "tool-call-delta": lambda d: ToolCallDelta(_object(d)["id"], _object(d)["delta"]),
    "tool-call": lambda d: ToolCall(_object(d)["id"], _object(d)["name"], _object(d)["arguments"]),
    "tool-result": lambda d: ToolResult(
        _object(d)["id"], _object(d)["output"], _object(d).get("is_error", False)
    ),
    "usage": lambda d: Usage(
        _object(d)["input_tokens"],
        _object(d)["output_tokens"],
        _object(d).get("reasoning_tokens"),
        _object(d).get("cached_input_tokens"),
    ),
    "error": lambda d: Error(_object(d)["message"], _object(d)["type"]),
}


def usage_from_json(data: object) -> Usage | None:
    """The :class:`Usage` that ``Usage.to_json()`` wrote, or ``None``."""
    try:
        usage = _DECODERS["usage"](data)
    except (KeyError, TypeError, ValueError):
        return None
    return usage if isinstance(usage, Usage) else None


def decode(event: Event) -> LLMEvent | Event:
    """The typed value ``event`` stores, or ``event`` itself when it is not
    part of the vocabulary (another name, or data of another shape)."""
    decoder = _DECODERS.get(event.event)
    try:
        if decoder is not None:
            return decoder(event.data)
        if event.event.startswith(DATA_PREFIX) and len(event.event) > len(DATA_PREFIX):
            payload = _object(event.data)
            if "data" in payload:
                return Data(event.event[len(DATA_PREFIX) :], payload["data"], payload.get("id"))
    except (KeyError, TypeError, ValueError):
        pass
    return event
