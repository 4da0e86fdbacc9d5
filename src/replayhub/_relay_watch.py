"""Watches whose wake-ups are calls, on a backend that can only be waited on.

The hub's feeds and lease keeper act on a watch's wake-up with a call
(``CallsOnChange``), so that no task per session waits. A backend without
that capability gets a task per watch that waits and makes the call.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import anyio
from anyio.abc import TaskGroup

from .backends import Watch


@asynccontextmanager
async def relayed(
    manager: AbstractAsyncContextManager[Watch],
    on_change: Callable[[], None],
    task_group: TaskGroup,
) -> AsyncIterator[Watch]:
    """The watch ``manager`` opens, each of its wake-ups relayed to
    ``on_change()`` by a task of ``task_group`` until the block ends."""
    async with manager as watch:
        scope = anyio.CancelScope()
        task_group.start_soon(_relay, watch, on_change, scope)
        try:
            yield watch
        finally:
            scope.cancel()


async def _relay(watch: Watch, on_change: Callable[[], None], scope: anyio.CancelScope) -> None:
    with scope:
        while True:
            await watch.wait()
            on_change()
