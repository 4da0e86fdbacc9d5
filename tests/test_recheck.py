"""The hub's recheck timer: each waiting reader is woken by its deadline."""

from __future__ import annotations

import anyio

from replayhub._recheck import RecheckTimer


class Flag:
    def __init__(self) -> None:
        self.woken_at: list[float] = []

    def notify(self) -> None:
        self.woken_at.append(anyio.current_time())


async def test_each_watch_is_woken_by_its_earliest_deadline_and_forgotten_ones_never() -> None:
    timer = RecheckTimer()
    early, late, gone = Flag(), Flag(), Flag()
    async with anyio.create_task_group() as tg:
        tg.start_soon(timer.run)
        start = anyio.current_time()
        timer.wake_at(start + 0.30, late)
        timer.wake_at(start + 0.50, early)
        timer.wake_at(start + 0.10, early)  # earlier: kept
        timer.wake_at(start + 0.40, early)  # later: met by the 0.10 one
        timer.wake_at(start + 0.05, gone)
        timer.forget(gone)
        await anyio.sleep(0.45)
        timer.wake_at(anyio.current_time() + 0.05, early)  # after its wake-up: a new one
        await anyio.sleep(0.2)
        tg.cancel_scope.cancel()
    assert gone.woken_at == []
    for flag, deadlines in ((early, [0.10, 0.50]), (late, [0.30])):
        # Once per deadline, never before it (and not long after: the later
        # deadline of `early` was met by its earlier one).
        for woken, deadline in zip(flag.woken_at, deadlines, strict=True):
            assert start + deadline <= woken < start + deadline + 0.1 + 0.25
