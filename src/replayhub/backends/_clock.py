"""The event loop running now: whether it is Trio, and its clock, found once."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable


def running_trio() -> bool:
    """Whether the current task runs on Trio (without importing Trio, which
    takes about 0.1 s here: if it is not imported, it is not running)."""
    trio = sys.modules.get("trio")
    if trio is None:
        return False
    try:
        trio.lowlevel.current_task()
    except RuntimeError:  # not in Trio
        return False
    return True


def loop_clock() -> Callable[[], float]:
    """The clock :func:`anyio.current_time` reads, for the loop running now.

    ``anyio.current_time()`` finds the running loop on every call (about a
    microsecond here); a backend that reads the clock per event looks it up
    once, when it is entered. Trio's clock is the one a test's ``MockClock``
    replaces.
    """
    if running_trio():
        clock: Callable[[], float] = sys.modules["trio"].current_time
        return clock
    return asyncio.get_running_loop().time
