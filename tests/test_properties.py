"""Property tests: random interleavings of sends, joins, resumes and ends,
checked against a plain list model of the log."""

from __future__ import annotations

from dataclasses import dataclass

import anyio
from anyio.abc import TaskStatus
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from replayhub import Event, Hub, State

from .conftest import HubFactory

END_STATES = {"done": State.DONE, "fail": State.FAILED, "cancel": State.CANCELLED}


@dataclass
class Reader:
    start: int  # how many events of the log come before what it must get
    received: list[Event]
    outcome: State | None = None


step = st.one_of(
    st.tuples(st.just("send"), st.integers(1, 20)),
    st.tuples(st.just("flush"), st.just(0)),
    st.tuples(st.just("join"), st.just(0)),
    st.tuples(st.just("resume"), st.integers(0, 1000)),
    st.tuples(st.just("yield"), st.integers(0, 3)),
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    steps=st.lists(step, max_size=25),
    end=st.sampled_from(sorted(END_STATES)),
    batch=st.booleans(),
)
async def test_every_reader_sees_the_log_exactly_once_in_order(
    make_hub: HubFactory, steps: list[tuple[str, int]], end: str, batch: bool
) -> None:
    model: list[str] = []
    readers: list[Reader] = []

    async def read(
        hub: Hub, after: str | None, start: int, *, task_status: TaskStatus[None]
    ) -> None:
        reader = Reader(start, [])
        readers.append(reader)
        async with hub.subscribe("s", after=after, batch_replay=batch) as events:
            task_status.started()
            async for event in events:
                reader.received.append(event)
        assert events.outcome is not None
        reader.outcome = events.outcome.state

    async with make_hub(lease_ttl=2.0) as hub, anyio.create_task_group() as tg:
        try:
            async with hub.produce("s") as stream:
                delivered_ids: list[str] = []
                for action, arg in steps:
                    if action == "send":
                        text = f"e{len(model)}." * arg
                        delivered_ids.append(await stream.send(text))
                        model.append(text)
                    elif action == "flush":
                        await stream.flush()
                    elif action == "join":
                        await tg.start(read, hub, None, 0)
                    elif action == "resume" and delivered_ids:
                        await stream.flush()
                        index = arg % len(delivered_ids)
                        await tg.start(read, hub, delivered_ids[index], index + 1)
                    elif action == "yield":
                        for _ in range(arg):
                            await anyio.lowlevel.checkpoint()
                if end == "fail":
                    raise LookupError("end")
                if end == "cancel":
                    await hub.cancel("s")
                    await anyio.sleep(5)
        except LookupError:
            pass
        await tg.start(read, hub, None, 0)  # a late joiner after the end

    for index, reader in enumerate(readers):
        assert reader.outcome is END_STATES[end]
        seqs = [int(event.id.split("-")[1]) for event in reader.received]
        joined = "".join(str(event.data) for event in reader.received)
        # No gap, no duplicate: exactly the log after the reader's cursor.
        assert joined == "".join(model[reader.start :]), f"reader {index}"
        assert seqs == sorted(set(seqs)), f"reader {index}: out of order or duplicated"
        if not batch:
            assert seqs == list(range(reader.start + 1, len(model) + 1)), f"reader {index}"
        elif seqs:
            assert seqs[-1] == len(model)
