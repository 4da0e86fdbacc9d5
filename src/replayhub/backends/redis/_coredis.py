"""Where replayhub reads coredis 6.9 below its public API, for speed.

coredis hands each Pub/Sub message to ``get_message()`` one at a time, and
``get_message()`` enters a cancel scope for its timeout even without one (a
few microseconds each on either loop). At chat rates a hub receives one
message per stored batch of every session it follows, so that alone was a
visible share of a busy process. Its parsed messages wait in a memory
object stream, ``_receive_stream``: reading that stream directly, and
taking everything already there in one wake-up, is what ``get_message()``
does minus the scope. ``tests/test_redis_backend.py`` checks the attribute
is still there and still carries the messages, so a coredis release that
changes it fails the suite rather than the notifier.
"""

from __future__ import annotations

from typing import Any

from anyio import WouldBlock


async def receive_messages(pubsub: Any) -> list[Any]:
    """Every message the Pub/Sub client has parsed, waiting for the first
    (``None`` entries are coredis's own, for messages it handled itself)."""
    stream = pubsub._receive_stream
    messages = [await stream.receive()]
    try:
        while True:
            messages.append(stream.receive_nowait())
    except WouldBlock:
        return messages
