"""The wake-up a reader level with its feed sleeps on: ``_wakeup``."""

from __future__ import annotations

import anyio
import pytest

from replayhub._wakeup import wakeup_factory

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("cancelled", [None, 0, 1, 2])
async def test_a_wake_reaches_every_task_waiting_at_that_moment(cancelled: int | None) -> None:
    """One reader per subscription is the rule; a second task waiting on the
    same one at the same time must still wake, not hang. The first waiter is
    kept apart from the others: whichever one is cancelled, the wake reaches
    the rest and no longer the cancelled one (on Trio, rescheduling a task
    that no longer waits would be an error)."""
    wakeup = wakeup_factory()()
    woken: list[int] = []
    scopes = [anyio.CancelScope() for _ in range(3)]

    async def wait(number: int) -> None:
        with scopes[number]:
            await wakeup.wait()
            woken.append(number)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as task_group:
            for number in range(3):
                task_group.start_soon(wait, number)
                await anyio.wait_all_tasks_blocked()  # in this order
            if cancelled is not None:
                scopes[cancelled].cancel()
                await anyio.wait_all_tasks_blocked()
            wakeup.wake()
    assert sorted(woken) == sorted({0, 1, 2} - {cancelled})
    wakeup.wake()  # nobody waits any more: dropped


async def test_a_cancelled_wait_leaves_the_next_one_wakeable() -> None:
    wakeup = wakeup_factory()()
    with anyio.move_on_after(0.01) as scope:
        await wakeup.wait()
    assert scope.cancelled_caught
    wakeup.wake()  # nobody waits: dropped
    woken = anyio.Event()

    async def wait() -> None:
        await wakeup.wait()
        woken.set()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as task_group:
            task_group.start_soon(wait)
            await anyio.wait_all_tasks_blocked()
            assert not woken.is_set()
            wakeup.wake()
    assert woken.is_set()


async def test_a_wake_with_nobody_waiting_is_dropped() -> None:
    wakeup = wakeup_factory()()
    wakeup.wake()
    with anyio.move_on_after(0.05) as scope:
        await wakeup.wait()
    assert scope.cancelled_caught
