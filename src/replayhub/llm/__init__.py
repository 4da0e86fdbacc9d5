"""Typed LLM events on top of ordinary replayhub events.

A vocabulary for what a model streams (text, reasoning, tool calls, usage,
errors, app-defined data parts), relays that turn the OpenAI and Anthropic
SDKs' streams into it, and readers that turn stored events back into typed
values or a whole :class:`Message`::

    async with hub.produce(chat_id) as stream:
        reply = await client.chat.completions.create(..., stream=True)
        message = await llm.relay(stream, reply)

    async with hub.subscribe(chat_id) as events:
        async for item in llm.read(events):
            ...

Importing it needs neither SDK.
"""

from .._error_types import ErrorType as ErrorType
from ._message import Message as Message
from ._message import MessageBuilder as MessageBuilder
from ._message import fold as fold
from ._reading import TypedEvents as TypedEvents
from ._reading import collect as collect
from ._reading import read as read
from ._relay import relay as relay
from ._vocabulary import ContentEnd as ContentEnd
from ._vocabulary import ContentStart as ContentStart
from ._vocabulary import ContentType as ContentType
from ._vocabulary import Data as Data
from ._vocabulary import Error as Error
from ._vocabulary import FinishReason as FinishReason
from ._vocabulary import LLMEvent as LLMEvent
from ._vocabulary import MessageStart as MessageStart
from ._vocabulary import MessageStop as MessageStop
from ._vocabulary import ReasoningDelta as ReasoningDelta
from ._vocabulary import StreamError as StreamError
from ._vocabulary import TextDelta as TextDelta
from ._vocabulary import ToolCall as ToolCall
from ._vocabulary import ToolCallDelta as ToolCallDelta
from ._vocabulary import ToolCallStart as ToolCallStart
from ._vocabulary import ToolResult as ToolResult
from ._vocabulary import Usage as Usage
from ._vocabulary import decode as decode

__all__ = [
    "ContentEnd",
    "ContentStart",
    "ContentType",
    "Data",
    "Error",
    "ErrorType",
    "FinishReason",
    "LLMEvent",
    "Message",
    "MessageBuilder",
    "MessageStart",
    "MessageStop",
    "ReasoningDelta",
    "StreamError",
    "TextDelta",
    "ToolCall",
    "ToolCallDelta",
    "ToolCallStart",
    "ToolResult",
    "TypedEvents",
    "Usage",
    "collect",
    "decode",
    "fold",
    "read",
    "relay",
]

# Tracebacks and docs show the public path, not the private module.
for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("replayhub.llm._"):
        _obj.__module__ = "replayhub.llm"
del _name, _obj
