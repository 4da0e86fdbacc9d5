"""The first example of the docs: produce a stream, then replay it."""

import anyio

import replayhub


async def main() -> None:
    async with replayhub.Hub() as hub:
        async with hub.produce("chat:42") as stream:
            for token in ["Hello", ", ", "world"]:
                await stream.send(token, event="text-delta")

        async with hub.subscribe("chat:42", after=None) as events:
            async for event in events:
                print(event.id, event.event, event.data)
        print(events.outcome)


if __name__ == "__main__":
    anyio.run(main)  # or anyio.run(main, backend="trio")
