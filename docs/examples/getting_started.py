"""The getting-started walk-through as one program (docs/getting-started.md)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio

import replayhub

seen: list[str] = []


async def llm() -> AsyncIterator[str]:
    for token in ["Streams ", "that ", "resume."]:
        await anyio.sleep(0.01)
        yield token


def remember(event_id: str) -> None:
    seen.append(event_id)


def show(data: object) -> None:
    print(data, end="", flush=True)


async def main() -> None:
    # --8<-- [start:hub]
    hub = replayhub.Hub()  # in-process storage
    hub = replayhub.Hub.from_url("memory://")  # the same
    async with hub:
        # --8<-- [end:hub]
        # --8<-- [start:produce]
        async with hub.produce("chat:42", metadata={"model": "m"}) as stream:
            async for token in llm():
                await stream.send(token, event="text-delta")
            await stream.set_metadata({"usage": {"out": 7}})
        # --8<-- [end:produce]
        last_event_id = None
        # --8<-- [start:subscribe]
        async with hub.subscribe("chat:42", after=last_event_id) as events:
            async for event in events:
                remember(event.id)  # pass it back as after= to resume
                show(event.data)
        print(events.outcome)  # its state: done, failed, cancelled or abandoned
        # --8<-- [end:subscribe]
        # --8<-- [start:resume]
        async with hub.subscribe("chat:42", after=seen[0]) as events:
            resumed = [event.data async for event in events]
        assert resumed == ["that ", "resume."]  # right after the first event
        # --8<-- [end:resume]
        async with anyio.create_task_group() as task_group:

            async def endless() -> None:
                async with hub.produce("chat:43") as stream:
                    while True:
                        await stream.send("token ")
                        await anyio.sleep(0.01)

            task_group.start_soon(endless)
            await anyio.sleep(0.05)
            # --8<-- [start:stop]
            await hub.cancel("chat:43")  # returns at once
            info = await hub.cancel("chat:43", wait=5)  # returns the final SessionInfo
            # --8<-- [end:stop]
        assert info is not None
        assert info.state is replayhub.State.CANCELLED


if __name__ == "__main__":
    anyio.run(main)
