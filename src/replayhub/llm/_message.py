"""A whole reply, assembled from its typed events."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .._events import Event, Outcome
from ._vocabulary import (
    Data,
    Error,
    FinishReason,
    LLMEvent,
    MessageStart,
    MessageStop,
    ReasoningDelta,
    TextDelta,
    ToolCall,
    ToolResult,
    Usage,
)


@dataclass(frozen=True, slots=True)
class Message:
    """A reply as its events add up: returned by :func:`relay`,
    :func:`collect` and :func:`fold`."""

    message_id: str | None = None
    """From the first :class:`MessageStart`."""
    model: str | None = None
    text: str = ""
    """Every :class:`TextDelta`, joined."""
    reasoning: str = ""
    """Every :class:`ReasoningDelta`, joined."""
    tool_calls: tuple[ToolCall, ...] = ()
    """The complete calls, in order."""
    tool_results: tuple[ToolResult, ...] = ()
    usage: Usage | None = None
    """The sum of every :class:`Usage`; ``None`` if none was sent."""
    finish_reason: FinishReason | None = None
    """From the last :class:`MessageStop`; ``None`` if the reply did not finish."""
    data: tuple[Data, ...] = ()
    errors: tuple[Error, ...] = ()
    other_events: tuple[Event, ...] = ()
    """Events outside the vocabulary, as they were read."""
    outcome: Outcome | None = None
    """How the session ended (set by :func:`collect`; ``None`` elsewhere)."""


class MessageBuilder:
    """Folds typed events into a :class:`Message`, one :meth:`add` at a time."""

    def __init__(self) -> None:
        self._message_id: str | None = None
        self._model: str | None = None
        self._text: list[str] = []
        self._reasoning: list[str] = []
        self._tool_calls: list[ToolCall] = []
        self._tool_results: list[ToolResult] = []
        self._usage: Usage | None = None
        self._finish_reason: FinishReason | None = None
        self._data: list[Data] = []
        self._errors: list[Error] = []
        self._other: list[Event] = []

    def add(self, item: LLMEvent | Event) -> None:
        match item:
            case TextDelta(text=text):
                self._text.append(text)
            case ReasoningDelta(text=text):
                self._reasoning.append(text)
            case MessageStart():
                if self._message_id is None:
                    self._message_id = item.message_id
                if self._model is None:
                    self._model = item.model
            case MessageStop(finish_reason=reason):
                self._finish_reason = reason
            case ToolCall():
                self._tool_calls.append(item)
            case ToolResult():
                self._tool_results.append(item)
            case Usage():
                self._usage = item if self._usage is None else self._usage + item
            case Data():
                self._data.append(item)
            case Error():
                self._errors.append(item)
            case Event():
                self._other.append(item)
            case _:
                pass  # block boundaries and call pieces: the complete parts carry it all

    def message(self, outcome: Outcome | None = None) -> Message:
        return Message(
            message_id=self._message_id,
            model=self._model,
            text="".join(self._text),
            reasoning="".join(self._reasoning),
            tool_calls=tuple(self._tool_calls),
            tool_results=tuple(self._tool_results),
            usage=self._usage,
            finish_reason=self._finish_reason,
            data=tuple(self._data),
            errors=tuple(self._errors),
            other_events=tuple(self._other),
            outcome=outcome,
        )


def fold(items: Iterable[LLMEvent | Event]) -> Message:
    """The :class:`Message` that ``items`` add up to."""
    builder = MessageBuilder()
    for item in items:
        builder.add(item)
    return builder.message()
