"""The hub's lease keeper: one task renews every producer's lease, none
holds back another, and a wake-up during a renewal is never lost; where
storage renews many in one call, leases due together go in one."""

from __future__ import annotations

import math
from collections.abc import Sequence

import anyio

from replayhub import BackendUnavailableError, LeaseLostError
from replayhub._lease import LeaseKeeper
from replayhub.backends import Renewal


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

    # What a renewal in a batch needs; a keeper without renew_many never asks.
    lease_deadline = math.inf

    @property
    def lease(self) -> tuple[str, int]:
        raise AssertionError("renewed in a batch")

    def lease_renewed(self, started: float, result: Renewal | Exception) -> float | None:
        raise AssertionError("renewed in a batch")


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


class BatchProducer(Producer):
    """A producer renewed in batches: records what each batch said of it."""

    def __init__(self, name: str, *, interval: float | None = 0.05, lease: float = 10.0) -> None:
        super().__init__(interval=interval)
        self.name = name
        self.lease_deadline = anyio.current_time() + lease
        self.results: list[Renewal | Exception] = []
        self.answered = anyio.Event()

    @property
    def lease(self) -> tuple[str, int]:
        return self.name, 1

    def lease_renewed(self, started: float, result: Renewal | Exception) -> float | None:
        self.started.append(started)
        self.results.append(result)
        self.answered.set()
        return self.interval


class Storage:
    """A ``renew_many``: records each call, answers each lease from
    ``answers`` (a Renewal by default), or fails, or hangs."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.answers: dict[str, Renewal | Exception] = {}
        self.fail: Exception | None = None
        self.hang = False
        self.called = anyio.Event()

    async def renew_many(self, leases: Sequence[tuple[str, int]]) -> list[Renewal | Exception]:
        self.calls.append([name for name, _ in leases])
        self.called.set()
        await anyio.sleep(0.01)
        if self.hang:
            await anyio.sleep_forever()
        if self.fail is not None:
            raise self.fail
        return [self.answers.get(name, Renewal(cancel_requested=False)) for name, _ in leases]


async def test_leases_due_together_are_renewed_in_one_call_each_with_its_own_answer() -> None:
    storage = Storage()
    storage.answers["cancelled"] = Renewal(cancel_requested=True)
    storage.answers["lost"] = LeaseLostError("gone")
    keeper = LeaseKeeper(storage.renew_many)
    names = ["a", "cancelled", "lost", "b"]
    producers = [BatchProducer(name, interval=0.2) for name in names]
    async with anyio.create_task_group() as tg:
        await tg.start(keeper.run)
        for producer in producers:  # claimed together: renewed at once, together
            keeper.add(producer)
        await anyio.sleep(0.3)  # and due together again
        tg.cancel_scope.cancel()
    assert storage.calls == [names, names]
    for producer in producers:
        assert producer.results == [storage.answers.get(producer.name, Renewal(False))] * 2


async def test_a_failed_batch_fails_each_and_a_hung_one_ends_at_the_soonest_lease() -> None:
    storage = Storage()
    storage.fail = BackendUnavailableError("down")
    keeper = LeaseKeeper(storage.renew_many)
    failing = BatchProducer("failing", interval=None)
    async with anyio.create_task_group() as tg:
        await tg.start(keeper.run)
        keeper.add(failing)
        await anyio.sleep(0.1)
        storage.fail, storage.hang = None, True
        soon, later = BatchProducer("soon", lease=0.2), BatchProducer("later", lease=5.0)
        keeper.add(soon)
        keeper.add(later)
        started = anyio.current_time()
        with anyio.fail_after(2):
            await later.answered.wait()
        waited = anyio.current_time() - started
        tg.cancel_scope.cancel()
    assert len(failing.results) == 1
    assert isinstance(failing.results[0], BackendUnavailableError)
    # One answer for all: no longer than the soonest lease, for every member.
    assert storage.calls[-1] == ["soon", "later"]
    assert 0.15 < waited < 1.0
    assert [type(result) for result in soon.results + later.results] == [TimeoutError] * 2


async def test_a_producer_discarded_while_its_batch_is_out_is_told_nothing() -> None:
    storage = Storage()
    keeper = LeaseKeeper(storage.renew_many)
    kept, gone = BatchProducer("kept", interval=None), BatchProducer("gone", interval=None)
    async with anyio.create_task_group() as tg:
        await tg.start(keeper.run)
        keeper.add(kept)
        keeper.add(gone)
        await storage.called.wait()  # the batch is out (its call takes 0.01 s)
        keeper.discard(gone)
        keeper.renew_soon(kept)  # a wake-up meanwhile: one more batch, at once
        await anyio.sleep(0.1)
        tg.cancel_scope.cancel()
    assert storage.calls == [["kept", "gone"], ["kept"]]
    assert gone.results == []
    assert kept.results == [Renewal(False)] * 2
