"""The hub's lease keeper: one task renews every producer's lease, none
holds back another, and a wake-up during a renewal is never lost."""

from __future__ import annotations

import anyio

from replayhub._lease import LeaseKeeper


class Producer:
    """Renews in ``takes`` seconds (forever if ``None``), then asks for the
    next renewal after ``interval``."""

    def __init__(self, *, interval: float | None = 0.05, takes: float | None = 0.0) -> None:
        self.interval, self.takes = interval, takes
        self.started: list[float] = []
        self.finished = 0
        self.cancelled = False
        self.release = anyio.Event()

    async def renew_lease(self) -> float | None:
        self.started.append(anyio.current_time())
        try:
            if self.takes is None:
                await anyio.sleep_forever()
            else:
                await anyio.sleep(self.takes)
        except anyio.get_cancelled_exc_class():
            self.cancelled = True
            raise
        self.finished += 1
        return self.interval


async def test_a_renewal_that_hangs_holds_back_no_other_lease() -> None:
    keeper = LeaseKeeper()
    hung, steady = Producer(takes=None), Producer(interval=0.05)
    async with anyio.create_task_group() as tg:
        await tg.start(keeper.run)
        keeper.add(hung)
        keeper.add(steady)
        await anyio.sleep(0.5)
        assert len(hung.started) == 1  # renewing still, not started again
        keeper.discard(hung)
        await anyio.sleep(0.05)
        tg.cancel_scope.cancel()
    assert hung.cancelled  # discarding cancels the renewal under way
    assert hung.finished == 0
    # Renewed at once, then every 0.05 s (with slack for a slow machine).
    assert steady.finished >= 5
    assert steady.started[0] - (hung.started[0]) < 0.05


async def test_a_wake_up_during_a_renewal_brings_one_more_at_once() -> None:
    # The renewal under way may have read the cancel flag before the change
    # that woke the watch: one more follows it, without waiting for the
    # interval; several wake-ups meanwhile make one renewal, not several.
    keeper = LeaseKeeper()
    producer = Producer(interval=60.0, takes=0.1)
    async with anyio.create_task_group() as tg:
        await tg.start(keeper.run)
        keeper.add(producer)
        await anyio.sleep(0.05)  # the first renewal is under way
        for _ in range(3):
            keeper.renew_soon(producer)
        await anyio.sleep(0.5)
        tg.cancel_scope.cancel()
    assert len(producer.started) == 2
    assert producer.started[1] - producer.started[0] < 0.1 + 0.1


async def test_timed_renewals_stop_when_a_producer_asks_for_none_and_wake_ups_still_renew() -> None:
    # A producer whose claim is lost, or whose storage refuses it, asks for
    # no timed renewal; a wake-up (a cancel request) still renews it.
    keeper = LeaseKeeper()
    producer = Producer(interval=None)
    gone = Producer(interval=0.01)
    async with anyio.create_task_group() as tg:
        await tg.start(keeper.run)
        keeper.add(producer)
        keeper.add(gone)
        await anyio.sleep(0.2)
        assert len(producer.started) == 1
        keeper.renew_soon(producer)
        keeper.discard(gone)
        renewals_of_gone = len(gone.started)
        keeper.renew_soon(gone)  # no longer kept: nothing
        await anyio.sleep(0.2)
        tg.cancel_scope.cancel()
    assert len(producer.started) == 2
    assert len(gone.started) == renewals_of_gone
