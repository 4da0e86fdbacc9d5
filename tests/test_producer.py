"""The producer's contract: claim, buffered sends, flush, and exactly one
terminal state on every way out of the block."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest
from anyio.abc import TaskStatus

from replayhub import (
    BackendUnavailableError,
    Event,
    Hub,
    InvalidInputError,
    LeaseLostError,
    Outcome,
    SessionBusyError,
    SessionInfo,
    State,
    StorageRefusedError,
)
from replayhub.backends import Backend, Watch

from .conftest import HubFactory
from .helpers import FaultyWrap, collect, texts


async def test_send_returns_ordered_ids_and_events_are_stored_in_order(hub: Hub) -> None:
    async with hub.produce("s", metadata={"model": "m"}) as stream:
        ids = [await stream.send(f"t{i}") for i in range(20)]
        await stream.send({"name": "f", "args": [1, 2]}, event="tool-call")
        await stream.send(b"\x00raw\xff", event="audio")
    g = stream.generation
    assert g >= 1
    assert ids == [f"{g}-{i}" for i in range(1, 21)]
    events, outcome = await collect(hub, "s")
    assert [e.id for e in events] == [*ids, f"{g}-21", f"{g}-22"]
    assert texts(events) == [f"t{i}" for i in range(20)] + [
        {"name": "f", "args": [1, 2]},
        b"\x00raw\xff",
    ]
    assert [e.event for e in events[-3:]] == ["message", "tool-call", "audio"]
    assert outcome.state is State.DONE
    assert outcome.metadata == {"model": "m"}


class _NamedText(str):
    """Text that names its own event, as an EventLike may."""

    def __replayhub_event__(self) -> tuple[str, object]:
        return "note", {"text": str(self)}


async def test_text_that_names_its_own_event_is_stored_as_that_event(hub: Hub) -> None:
    # send takes plain text on a path of its own: a str subclass is not
    # plain text, and non-ASCII text is measured in UTF-8 bytes.
    async with hub.produce("s") as stream:
        await stream.send(_NamedText("a"))
        stream.send_nowait(_NamedText("b"))
        await stream.send("é" * 3)
    events, _ = await collect(hub, "s")
    assert [(e.event, e.data) for e in events] == [
        ("note", {"text": "a"}),
        ("note", {"text": "b"}),
        ("message", "ééé"),
    ]


async def test_oversize_text_is_refused_whether_ascii_or_not(make_hub: HubFactory) -> None:
    async with make_hub(max_event_bytes=4) as small, small.produce("s") as stream:
        await stream.send("abcd")
        await stream.send("éé")  # 4 bytes
        for text in ("abcde", "ééé"):
            with pytest.raises(InvalidInputError, match="max_event_bytes"):
                await stream.send(text)
        assert stream.send_nowait("wxyz").endswith("-3")


async def test_json_values_are_copied_at_send(hub: Hub) -> None:
    payload = {"n": [1]}
    async with hub.produce("s") as stream:
        await stream.send(payload)
        payload["n"].append(2)  # mutating after send changes nothing stored
    events, _ = await collect(hub, "s")
    assert events[0].data == {"n": [1]}


async def test_busy_session_cannot_be_claimed_twice(hub: Hub) -> None:
    async with hub.produce("s"):
        with pytest.raises(SessionBusyError):
            async with hub.produce("s"):
                pass
    info = await hub.info("s")
    assert info is not None
    assert info.state is State.DONE


async def test_concurrent_claims_have_exactly_one_winner(hub: Hub) -> None:
    winners: list[int] = []
    busy = 0
    release = anyio.Event()

    async def try_claim() -> None:
        nonlocal busy
        try:
            async with hub.produce("race") as stream:
                winners.append(stream.generation)
                await release.wait()
        except SessionBusyError:
            busy += 1

    async with anyio.create_task_group() as tg:
        for _ in range(8):
            tg.start_soon(try_claim)
        await anyio.wait_all_tasks_blocked()
        await anyio.sleep(0.05)
        release.set()
    assert len(winners) == 1
    assert busy == 7


async def test_reclaim_starts_a_new_generation_and_hides_the_old_log(hub: Hub) -> None:
    async with hub.produce("s") as first:
        await first.send("old")
    async with hub.produce("s") as second:
        await second.send("new")
    assert second.generation > first.generation
    events, outcome = await collect(hub, "s")
    assert texts(events) == ["new"]
    assert events[0].id == f"{second.generation}-1"
    assert outcome.state is State.DONE


async def test_flush_waits_for_storage(hub: Hub) -> None:
    async with hub.produce("s") as stream:
        for i in range(100):
            await stream.send(i)
        await stream.set_metadata({"usage": {"out": 7}})
        await stream.flush()
        info = await hub.info("s")
        assert info is not None
        assert info.events == 100
        assert info.metadata == {"usage": {"out": 7}}
        assert info.state is State.LIVE


async def test_set_metadata_merges_top_level_keys(hub: Hub) -> None:
    async with hub.produce("s", metadata={"model": "m", "usage": None}) as stream:
        await stream.set_metadata({"usage": {"out": 7}})
        assert stream.metadata == {"model": "m", "usage": {"out": 7}}
    _, outcome = await collect(hub, "s")
    assert outcome.metadata == {"model": "m", "usage": {"out": 7}}


async def test_send_does_not_wait_for_storage_until_the_buffer_is_full(
    make_hub: HubFactory,
) -> None:
    wrap = FaultyWrap()

    async with make_hub(wrap=wrap, buffer_size=8) as hub, hub.produce("s") as stream:
        gate = wrap.backend.append_gate = anyio.Event()
        await stream.send(0)
        await anyio.wait_all_tasks_blocked()  # the writer took event 0; storage holds it
        # The buffer accepts 8 more events without waiting.
        with anyio.fail_after(1):
            for i in range(1, 9):
                await stream.send(i)
        # The next waits for room: backpressure, not loss.
        with anyio.move_on_after(0.2) as blocked:
            await stream.send(9)
        assert blocked.cancelled_caught
        gate.set()
        # The cancelled send consumed no id: the next one is 10th.
        assert await stream.send("next") == f"{stream.generation}-10"
    async with make_hub(wrap=lambda backend: wrap.backend) as hub:
        events, _ = await collect(hub, "s")
    assert texts(events) == [0, 1, 2, 3, 4, 5, 6, 7, 8, "next"]


async def test_storage_failure_surfaces_at_send_flush_and_exit(make_hub: HubFactory) -> None:
    wrap = FaultyWrap()

    async with make_hub(wrap=wrap) as hub:
        with pytest.raises(BackendUnavailableError):
            async with hub.produce("s") as stream:
                wrap.backend.append_error = RuntimeError("disk on fire")
                await stream.send("a")
                with pytest.raises(BackendUnavailableError, match="disk on fire"):
                    await stream.flush()
                with pytest.raises(BackendUnavailableError):
                    await stream.send("b")
        info = await hub.info("s")
        assert info is not None
        assert info.state is State.FAILED
        assert info.error is not None
        assert "disk on fire" in info.error


async def test_normal_exit_is_done(hub: Hub) -> None:
    async with hub.produce("s") as stream:
        await stream.send("a")
    assert not stream.cancel_requested
    _, outcome = await collect(hub, "s")
    assert outcome.state is State.DONE
    assert outcome.error is None


async def test_exception_is_failed_and_reraised_unchanged(hub: Hub) -> None:
    error = ValueError("model exploded")
    with pytest.raises(ValueError, match="model exploded") as raised:
        async with hub.produce("s") as stream:
            await stream.send("a")
            raise error
    assert raised.value is error  # not wrapped in an ExceptionGroup
    events, outcome = await collect(hub, "s")
    assert texts(events) == ["a"]  # sent before the error: flushed, not lost
    assert outcome.state is State.FAILED
    assert outcome.error == "ValueError: model exploded"


async def test_cancel_request_cancels_the_body_and_exits_quietly(hub: Hub) -> None:
    reached_end = False

    async def produce(*, task_status: TaskStatus[None]) -> None:
        nonlocal reached_end
        async with hub.produce("s") as stream:
            await stream.send("first")
            task_status.started()
            await anyio.sleep_forever()
            reached_end = True
        assert stream.cancel_requested

    async with anyio.create_task_group() as tg:
        await tg.start(produce)
        info = await hub.cancel("s", wait=5)
    assert info is not None
    assert info.state is State.CANCELLED
    assert not reached_end
    events, outcome = await collect(hub, "s")
    assert texts(events) == ["first"]
    assert outcome.state is State.CANCELLED


async def test_cancel_requested_before_the_body_runs_still_cancels(hub: Hub) -> None:
    async with hub.produce("s") as stream:
        await hub.cancel("s")
        await anyio.sleep(5)  # cancelled long before this ends
    assert stream.cancel_requested
    info = await hub.info("s")
    assert info is not None
    assert info.state is State.CANCELLED


async def test_outer_cancellation_is_cancelled_and_propagates(hub: Hub) -> None:
    with anyio.CancelScope() as scope:
        async with hub.produce("s") as stream:
            await stream.send("a")
            scope.cancel()  # from outside the producer, as a caller's timeout would
            await anyio.sleep_forever()
    assert scope.cancelled_caught  # the cancellation reached the caller's scope
    assert not stream.cancel_requested
    events, outcome = await collect(hub, "s")
    # The terminal write and the flush ran shielded despite the cancellation.
    assert texts(events) == ["a"]
    assert outcome.state is State.CANCELLED


async def test_every_send_is_a_checkpoint_where_cancellation_lands_before_queuing(
    hub: Hub,
) -> None:
    returned: list[str] = []
    async with hub.produce("s") as stream:
        with anyio.CancelScope() as scope:
            for i in range(1000):
                if i == 10:
                    scope.cancel()  # no other task runs meanwhile: only a send can deliver it
                returned.append(await stream.send(f"t{i}"))
        assert scope.cancelled_caught
        await stream.send("after")
    events, outcome = await collect(hub, "s")
    # The eleventh send took the cancellation before queuing its event: it
    # used no id, and the block went on and ended normally.
    assert len(returned) == 10
    assert [event.id for event in events] == [*returned, f"{stream.generation}-11"]
    assert texts(events) == [f"t{i}" for i in range(10)] + ["after"]
    assert outcome.state is State.DONE


async def test_a_send_lets_other_tasks_run(hub: Hub) -> None:
    ran: list[int] = []

    async def other() -> None:
        ran.append(len(sent))

    sent: list[str] = []
    async with hub.produce("s") as stream, anyio.create_task_group() as tg:
        tg.start_soon(other)
        for i in range(10):
            sent.append(await stream.send(f"t{i}"))
    # It ran during the first send (or the second: Trio runs the tasks ready
    # at one time in either order), not after the loop.
    assert len(ran) == 1
    assert ran[0] <= 1


async def test_send_nowait_queues_at_once_and_says_when_the_buffer_is_full(
    make_hub: HubFactory,
) -> None:
    async with make_hub(buffer_size=4) as hub:
        ran = False

        async def other() -> None:
            nonlocal ran
            ran = True

        async with hub.produce("s") as stream, anyio.create_task_group() as tg:
            tg.start_soon(other)
            ids = [stream.send_nowait(f"t{i}") for i in range(4)]
            assert not ran  # no checkpoint: the writer has not run either
            with pytest.raises(anyio.WouldBlock):
                stream.send_nowait("dropped")
            with pytest.raises(InvalidInputError):
                stream.send_nowait(object())  # type: ignore[arg-type]
            await stream.flush()
            ids.append(stream.send_nowait("t4"))
        events, outcome = await collect(hub, "s")
    assert [event.id for event in events] == ids
    assert texts(events) == ["t0", "t1", "t2", "t3", "t4"]
    assert outcome.state is State.DONE


async def test_a_cancel_request_stops_a_loop_of_sends_on_the_next_send(hub: Hub) -> None:
    sent = 0
    async with hub.produce("s") as stream:
        await stream.send("first")
        await hub.cancel("s")
        # Shielded, so the request lands while the body is not at a checkpoint.
        with anyio.CancelScope(shield=True), anyio.fail_after(5):
            while not stream._body_scope.cancel_called:  # noqa: ASYNC110 - no event tells
                await anyio.sleep(0.01)
        for i in range(1000):
            await stream.send(f"t{i}")
            sent += 1
    assert stream.cancel_requested
    assert sent == 0
    events, outcome = await collect(hub, "s")
    assert texts(events) == ["first"]  # the cancellation landed before "t0" was queued
    assert outcome.state is State.CANCELLED


async def test_cancel_request_after_the_body_finished_leaves_done(hub: Hub) -> None:
    async with hub.produce("s") as stream:
        await stream.send("a")
    await hub.cancel("s")
    _, outcome = await collect(hub, "s")
    assert outcome.state is State.DONE
    assert not stream.cancel_requested


async def test_removed_session_loses_the_claim(hub: Hub) -> None:
    with pytest.raises(LeaseLostError):
        async with hub.produce("s") as stream:
            await stream.send("a")
            await stream.flush()
            assert await hub.remove("s")
            await anyio.sleep(5)  # the body is cancelled when the claim is lost
    assert await hub.info("s") is None  # the stale producer wrote nothing back


async def test_producer_paused_past_its_lease_cannot_write(make_hub: HubFactory) -> None:
    async with make_hub(lease_ttl=0.3) as hub:
        with pytest.raises(LeaseLostError):
            async with hub.produce("s") as stream:
                await stream.send("before")
                await stream.flush()
                # Block the whole event loop, heartbeat included, like SIGSTOP.
                time.sleep(0.6)  # noqa: ASYNC251
                await stream.send("after")
                await stream.flush()
        events, outcome = await collect(hub, "s")
        assert texts(events) == ["before"]
        assert outcome.state is State.ABANDONED


async def test_a_lease_lost_to_unanswered_renewals_says_why(make_hub: HubFactory) -> None:
    # A renewal still unanswered when the lease runs out may mean storage is
    # away or this process too busy to renew in time: the error must not
    # claim to know which; a renewal that failed says how.
    for fault, why in [
        ("hang", "before a renewal was answered"),
        ("fail", "while storage was unreachable: Redis is down"),
    ]:
        wrap = FaultyWrap()
        async with make_hub(wrap=wrap, lease_ttl=0.3) as hub:
            with pytest.raises(LeaseLostError, match=why):
                async with hub.produce(f"s-{fault}") as stream:
                    await stream.send("stored")
                    await stream.flush()
                    if fault == "hang":
                        wrap.backend.park("renew")
                    else:
                        wrap.backend.renew_error = BackendUnavailableError("Redis is down")
                    await anyio.sleep(5)  # cancelled once the claim is lost


async def test_heartbeat_keeps_a_slow_producer_alive(make_hub: HubFactory) -> None:
    # Each pause is most of a lease; a renewal still has 0.15 s or more to
    # land (0.2 s leases were once too tight for a 3-node cluster under CI).
    async with make_hub(lease_ttl=0.5) as hub:
        async with hub.produce("s") as stream:
            for i in range(5):
                await anyio.sleep(0.35)  # 1.75 s in all: several leases
                await stream.send(i)
        events, outcome = await collect(hub, "s")
        assert texts(events) == [0, 1, 2, 3, 4]
        assert outcome.state is State.DONE


async def test_crashed_producer_is_abandoned_for_subscribers_and_waiters(
    make_hub: HubFactory,
) -> None:
    wrap = FaultyWrap()

    async with make_hub(wrap=wrap, lease_ttl=0.3) as hub:
        backend = wrap.backend
        # A producer that claimed and wrote, then vanished without a heartbeat.
        record = await backend.claim("s", metadata={}, lease_ttl=0.3, retention=60)
        events_before = await _append_raw(backend, "s", record.generation, ["x", "y"])
        started = anyio.current_time()
        collected: list[tuple[list[Event], Outcome]] = []
        cancelled: list[SessionInfo | None] = []

        async def subscriber() -> None:
            collected.append(await collect(hub, "s"))

        async def waiter() -> None:
            cancelled.append(await hub.cancel("s", wait=5))

        with anyio.fail_after(3):
            async with anyio.create_task_group() as tg:
                tg.start_soon(subscriber)
                tg.start_soon(waiter)
        elapsed = anyio.current_time() - started
        [(received, outcome)] = collected
        assert texts(received) == events_before
        assert outcome.state is State.ABANDONED
        assert cancelled[0] is not None
        assert cancelled[0].state is State.ABANDONED
        assert elapsed < 0.3 + 0.5


async def _append_raw(
    backend: Backend, session_id: str, generation: int, items: list[str]
) -> list[object]:
    from replayhub._events import DataKind, StoredEvent

    stored = [StoredEvent(i + 1, "message", DataKind.TEXT, text) for i, text in enumerate(items)]
    await backend.append(session_id, generation, stored, metadata=None)
    return list(items)


async def test_send_after_the_block_is_refused(hub: Hub) -> None:
    async with hub.produce("s") as stream:
        pass
    with pytest.raises(RuntimeError, match="inside its async with"):
        await stream.send("late")


async def test_max_events_is_an_error_not_a_silent_trim(make_hub: HubFactory) -> None:
    async with make_hub(max_events=3) as hub:
        with pytest.raises(InvalidInputError, match="max_events"):
            async with hub.produce("s") as stream:
                for i in range(4):
                    await stream.send(i)
        events, outcome = await collect(hub, "s")
        assert texts(events) == [0, 1, 2]
        assert outcome.state is State.FAILED


@pytest.mark.parametrize("backend_kind", ["memory", "redis"])  # the producer's retries
async def test_terminal_write_failure_is_reported(make_hub: HubFactory) -> None:
    wrap = FaultyWrap()

    async with make_hub(wrap=wrap, lease_ttl=0.6) as hub:
        with pytest.raises(BackendUnavailableError, match="gone"):
            async with hub.produce("s") as stream:
                await stream.send("a")
                wrap.backend.finish_error = BackendUnavailableError("gone")
        assert wrap.backend.finish_calls > 1  # tried again while the lease lasted
        info = await hub.info("s")
        assert info is not None
        assert info.state is State.LIVE  # left to its lease: it will be abandoned


@pytest.mark.parametrize("backend_kind", ["memory", "redis"])  # the producer's retries
async def test_a_terminal_write_that_fails_for_a_moment_is_made_again(
    make_hub: HubFactory,
) -> None:
    # Behind Sentinel, a finish made while the Sentinels disagree on the new
    # primary is refused as unconfirmed for a moment; one try left the
    # session live until its lease ran out, and the producer failed.
    wrap = FaultyWrap()

    async with make_hub(wrap=wrap) as hub:
        async with hub.produce("s") as stream:
            await stream.send("a")
            wrap.backend.finish_errors = [BackendUnavailableError("failover")] * 2
        assert wrap.backend.finish_calls == 3
        events, outcome = await collect(hub, "s")
        assert texts(events) == ["a"]
        assert outcome.state is State.DONE


@pytest.mark.parametrize("backend_kind", ["memory", "redis"])  # the producer's retries
async def test_a_terminal_write_storage_refuses_is_not_made_again(make_hub: HubFactory) -> None:
    wrap = FaultyWrap()

    async with make_hub(wrap=wrap) as hub:
        with pytest.raises(StorageRefusedError):
            async with hub.produce("s") as stream:
                await stream.send("a")
                wrap.backend.finish_error = StorageRefusedError("read-only")
        assert wrap.backend.finish_calls == 1  # refused: trying again would not help


async def test_large_buffers_are_written_in_bounded_batches(make_hub: HubFactory) -> None:
    wrap = FaultyWrap()

    async with make_hub(wrap=wrap, buffer_size=6000, max_events=6000) as hub:
        async with hub.produce("s") as stream:
            gate = wrap.backend.append_gate = anyio.Event()
            for i in range(6000):  # storage held: one big backlog
                await stream.send(i)
            gate.set()
        events, outcome = await collect(hub, "s")
        assert texts(events) == list(range(6000))
        assert outcome.state is State.DONE


class _DeafWatch:
    """A watch whose every wake-up is lost."""

    async def wait(self) -> None:
        await anyio.sleep_forever()

    def notify(self) -> None:
        pass


async def test_a_cancel_whose_wake_up_is_lost_is_seen_by_the_heartbeat(
    make_hub: HubFactory,
) -> None:
    wrap = FaultyWrap()
    lease = 0.6

    @asynccontextmanager
    async def deaf(session_id: str) -> AsyncIterator[Watch]:
        yield _DeafWatch()

    async with make_hub(wrap=wrap, lease_ttl=lease) as hub:
        wrap.backend.watch_claim = deaf  # type: ignore[method-assign]
        started = anyio.current_time()
        async with hub.produce("s") as stream:
            await hub.cancel("s")
            await anyio.sleep(10)
        assert stream.cancel_requested
        assert anyio.current_time() - started < lease / 3 + 0.2
