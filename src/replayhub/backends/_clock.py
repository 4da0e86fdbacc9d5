"""The running event loop's clock, found once."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable


def loop_clock() -> Callable[[], float]:
    """The clock :func:`anyio.current_time` reads, for the loop running now.

    ``anyio.current_time()`` finds the running loop on every call (about a
    microsecond here); a backend that reads the clock per event looks it up
    once, when it is entered. Trio's clock is the one a test's ``MockClock``
    replaces.
    """
    trio = sys.modules.get("trio")  # not imported: not running (importing it takes ~0.1 s)
    if trio is None:
        return asyncio.get_running_loop().time
    try:
        trio.lowlevel.current_task()
    except RuntimeError:  # not in Trio
        return asyncio.get_running_loop().time
    clock: Callable[[], float] = trio.current_time
    return clock
