"""The ``replayhub`` command line: demo, tail, cancel, info."""

from __future__ import annotations

import base64
import json
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import click

from . import Hub, ReplayHubError, State

DEFAULT_URL = "redis://127.0.0.1:6379/0"

#: Exit codes of ``tail``: how the session ended.
EXIT_CODES = {State.DONE: 0, State.FAILED: 1, State.CANCELLED: 3, State.ABANDONED: 4}
EXIT_ERROR = 5

url_option = click.option(
    "--url",
    envvar="REPLAYHUB_URL",
    default=DEFAULT_URL,
    show_default=True,
    help="Backend URL (or set REPLAYHUB_URL).",
)
namespace_option = click.option(
    "--namespace", default="replayhub", show_default=True, help="Namespace of the sessions."
)
loop_option = click.option(
    "--loop",
    type=click.Choice(["asyncio", "trio"]),
    default="asyncio",
    show_default=True,
    help="Event loop to run on.",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="replayhub")
def main() -> None:
    """Resumable, cancellable event streams."""


def _run(loop: str, work: Callable[[], Awaitable[int]]) -> None:
    """Run ``work`` and exit with its code; our errors are one line, no traceback."""
    try:
        code = anyio.run(work, backend=loop)
    except ReplayHubError as exc:
        click.echo(f"error: {exc}", err=True)
        code = EXIT_ERROR
    sys.exit(code)


@main.command()
@click.argument("session_id")
@url_option
@namespace_option
@click.option("--after", help="Resume after this event id.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per event.")
@loop_option
def tail(
    session_id: str, url: str, namespace: str, after: str | None, as_json: bool, loop: str
) -> None:
    """Print a session's events as they arrive, then exit with its outcome:
    0 done, 1 failed, 3 cancelled, 4 abandoned, 5 error."""

    async def work() -> int:
        async with Hub.from_url(url, namespace=namespace) as hub:
            async with hub.subscribe(session_id, after=after) as events:
                async for event in events:
                    if as_json:
                        data: Any = event.data
                        if isinstance(data, bytes):
                            data = {"base64": base64.b64encode(data).decode()}
                        click.echo(json.dumps({"id": event.id, "event": event.event, "data": data}))
                    elif isinstance(event.data, str):
                        click.echo(event.data, nl=False)
                    else:
                        click.echo(f"\n[{event.event}] {event.data!r}")
            outcome = events.outcome
            assert outcome is not None
            error_type = None if outcome.error_type is None else outcome.error_type.value
            if as_json:
                click.echo(
                    json.dumps(
                        {
                            "outcome": outcome.state.value,
                            "error": outcome.error,
                            "error_type": error_type,
                        }
                    )
                )
            else:
                kind = f" ({error_type})" if error_type else ""
                click.echo(
                    f"\n[{outcome.state.value}]{kind}"
                    + (f" {outcome.error}" if outcome.error else "")
                )
            return EXIT_CODES[outcome.state]

    _run(loop, work)


@main.command()
@click.argument("session_id")
@url_option
@namespace_option
@click.option("--wait", type=float, help="Seconds to wait for the session to end.")
@loop_option
def cancel(session_id: str, url: str, namespace: str, wait: float | None, loop: str) -> None:
    """Ask a session's producer, wherever it runs, to stop."""

    async def work() -> int:
        async with Hub.from_url(url, namespace=namespace) as hub:
            try:
                info = await hub.cancel(session_id, wait=wait)
            except TimeoutError as exc:
                click.echo(f"error: {exc}", err=True)
                return EXIT_ERROR
        if info is None:
            click.echo(f"error: no session {session_id!r}", err=True)
            return EXIT_ERROR
        click.echo(info.state.value)
        return 0

    _run(loop, work)


@main.command()
@click.argument("session_id")
@url_option
@namespace_option
@loop_option
def info(session_id: str, url: str, namespace: str, loop: str) -> None:
    """Print a session's state as JSON."""

    async def work() -> int:
        async with Hub.from_url(url, namespace=namespace) as hub:
            found = await hub.info(session_id)
        if found is None:
            click.echo(f"error: no session {session_id!r}", err=True)
            return EXIT_ERROR
        click.echo(json.dumps(found.to_json(), indent=2))
        return 0

    _run(loop, work)


@main.command()
@click.option(
    "--url",
    default="memory://",
    show_default=True,
    help="Backend URL; redis://... to share sessions between demo instances.",
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8000, show_default=True)
@click.option("--pace", type=float, default=0.05, show_default=True, help="Seconds per token.")
@click.option("--console", is_flag=True, help="Run the console demo instead of the web app.")
@namespace_option
@loop_option
def demo(
    url: str, host: str, port: int, pace: float, console: bool, namespace: str, loop: str
) -> None:
    """A chat page whose fake-model replies survive reloads and can be stopped.

    With --console: a reader drops and resumes without loss, then a Stop
    cancels a second reply, in the terminal."""
    if console:
        from .demo.console import run_console_demo

        async def run() -> int:
            async with Hub.from_url(url, namespace=namespace) as hub:
                return 0 if await run_console_demo(hub, pace=pace) else 1

        _run(loop, run)
    try:
        from .demo.web import create_app
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise click.ClickException(f"the web demo needs the 'web' extra: {exc}") from exc
    app = create_app(url, pace=pace, namespace=namespace)
    click.echo(f"replayhub demo on http://{host}:{port}/ ({url}, {loop}); Ctrl-C stops it")
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    if loop == "trio":
        from hypercorn.config import Config
        from hypercorn.trio import serve

        config = Config()
        config.bind = [f"{host}:{port}"]
        config.graceful_timeout = 1.0
        anyio.run(serve, app, config, backend="trio")  # type: ignore[arg-type]
    else:
        import uvicorn

        uvicorn.run(app, host=host, port=port, log_level="warning")
