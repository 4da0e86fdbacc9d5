"""Reading typed events back: from a subscription, or a whole stored reply."""

from __future__ import annotations

from .._events import Event
from .._hub import Hub
from .._subscription import Subscription
from ._message import Message, MessageBuilder
from ._vocabulary import LLMEvent, decode


class TypedEvents:
    """The typed values of a subscription's events, in order: what
    :func:`read` returns. Events outside the vocabulary come as they are.

    Iterating it iterates the subscription, so the subscription's cursor,
    :attr:`~replayhub.Subscription.last_event_id` and
    :attr:`~replayhub.Subscription.outcome` are what they would be; a
    cancelled ``__anext__`` loses nothing.
    """

    def __init__(self, events: Subscription) -> None:
        self._events = events

    def __aiter__(self) -> TypedEvents:
        return self

    async def __anext__(self) -> LLMEvent | Event:
        return decode(await self._events.__anext__())


def read(events: Subscription) -> TypedEvents:
    """Typed values from an open subscription: ``async for item in
    llm.read(events)`` yields :class:`TextDelta`, :class:`ToolCall`, ... and
    any other event untouched."""
    return TypedEvents(events)


async def collect(hub: Hub, session_id: str) -> Message:
    """The session's reply, replayed from storage and assembled.

    Reads the current generation from its first event; if the session is
    still live, follows it until it ends. :attr:`Message.outcome` says how it
    ended. To persist a finished reply, call it once the session has ended.

    :raises ~replayhub.SessionNotFoundError: if there is no such session, or
        it is removed while being read.
    :raises ~replayhub.BackendUnavailableError: if storage cannot be reached.

    Cancelling it leaves nothing behind.
    """
    builder = MessageBuilder()
    async with hub.subscribe(session_id) as events:
        async for batch in events.batches():
            for event in batch:
                builder.add(decode(event))
    return builder.message(events.outcome)
