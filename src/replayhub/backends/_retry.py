"""Back-off for storage calls that failed for want of storage (here, beside
the backends, so that a backend may retry as the core does)."""

from __future__ import annotations

#: The first delay before a retry, doubling up to the last: a storage
#: restart or a replaced connection mends within a few retries, and a second
#: between tries keeps a long outage from costing more than a call a second.
FIRST_DELAY, MAX_DELAY = 0.05, 1.0


class Backoff:
    """Retry delays that double from 50 ms to 1 s."""

    __slots__ = ("_delay",)

    def __init__(self) -> None:
        self._delay = FIRST_DELAY

    def next_delay(self) -> float:
        """The delay before the next try; each call doubles the one after."""
        delay = self._delay
        self._delay = min(delay * 2, MAX_DELAY)
        return delay

    def reset(self) -> None:
        """A call succeeded: the next failure starts from the first delay."""
        self._delay = FIRST_DELAY
