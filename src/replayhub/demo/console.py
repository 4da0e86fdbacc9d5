"""The console demo: one producer, a reader that drops and resumes, and a Stop."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import click
from anyio.abc import TaskStatus

from .. import Hub, State
from .fake_llm import generate, reply_to

PROMPT = "Why resumable streams?"


async def run_console_demo(hub: Hub, *, pace: float = 0.03) -> bool:
    """Run the demo on an open hub; ``True`` if every check held."""
    resumed_ok = await _drop_and_resume(hub, pace)
    stopped_ok = await _stop(hub, pace)
    return resumed_ok and stopped_ok


async def _drop_and_resume(hub: Hub, pace: float) -> bool:
    received: list[str] = []
    async with anyio.create_task_group() as tg:
        click.secho(f"producer: streaming a reply to {PROMPT!r}", fg="cyan")
        await tg.start(_produce, hub, "chat:1", generate(PROMPT, pace=pace))
        # A reader joins, reads a dozen tokens, then drops its connection...
        async with hub.subscribe("chat:1") as events:
            async for event in events:
                received.append(str(event.data))
                click.echo(event.data, nl=False)
                if len(received) == 12:
                    break
        last_id = events.last_event_id
        click.secho(f"\n[reader dropped after event {last_id}; the producer goes on]", fg="yellow")
        await anyio.sleep(pace * 8)
        # ...and comes back with the last id it saw, like a reloaded page.
        click.secho(f"[reader resumes with after={last_id!r}]", fg="yellow")
        async with hub.subscribe("chat:1", after=last_id) as events:
            async for event in events:
                received.append(str(event.data))
                click.echo(event.data, nl=False)
    outcome = events.outcome
    complete = "".join(received) == reply_to(PROMPT)
    click.secho(
        f"\nreader: outcome {outcome and outcome.state}; "
        f"the text arrived whole, each token once: {complete}",
        fg="green" if complete else "red",
    )
    return complete and outcome is not None and outcome.state is State.DONE


async def _stop(hub: Hub, pace: float) -> bool:
    click.secho("\nproducer: an endless reply, until the user presses Stop", fg="cyan")
    async with anyio.create_task_group() as tg:
        endless = generate("an endless story", pace=pace, words=100_000)
        await tg.start(_produce, hub, "chat:2", endless)
        async with hub.subscribe("chat:2") as events:
            async for event in events:
                click.echo(event.data, nl=False)
                if event.id.endswith("-10"):
                    await hub.cancel("chat:2")
                    click.secho(" [Stop]", fg="yellow", nl=False)
    outcome = events.outcome
    stopped = outcome is not None and outcome.state is State.CANCELLED
    click.secho(f"\nreader: outcome {outcome and outcome.state}", fg="green" if stopped else "red")
    return stopped


async def _produce(
    hub: Hub, session_id: str, tokens: AsyncIterator[str], *, task_status: TaskStatus[None]
) -> None:
    async with hub.produce(session_id) as stream:
        task_status.started()
        async for token in tokens:
            await stream.send(token, event="text-delta")
