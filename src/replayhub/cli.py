"""The ``replayhub`` command line."""

from __future__ import annotations

import sys

import anyio
import click

from . import Hub


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="replayhub")
def main() -> None:
    """Resumable, cancellable event streams."""


@main.command()
@click.option(
    "--loop",
    type=click.Choice(["asyncio", "trio"]),
    default="asyncio",
    show_default=True,
    help="Event loop to run on.",
)
@click.option("--pace", type=float, default=0.03, show_default=True, help="Seconds per token.")
def demo(loop: str, pace: float) -> None:
    """Stream a fake reply on the in-process backend: a reader drops and
    resumes without loss, then a Stop cancels a second reply."""
    from .demo.console import run_console_demo

    async def run() -> bool:
        async with Hub() as hub:
            return await run_console_demo(hub, pace=pace)

    ok = anyio.run(run, backend=loop)
    sys.exit(0 if ok else 1)
