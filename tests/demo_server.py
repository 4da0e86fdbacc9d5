"""Servers in a subprocess on a free port: the demo app (`replayhub demo`)
and the docs' example apps, on uvicorn (asyncio) or Hypercorn (trio)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from .redis_server import free_port

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "docs" / "examples"
PACE = 0.01
WORDS = 60  # the demo's reply length


class ServerProcess:
    """Runs ``command`` (``{port}`` filled in) until the block ends."""

    def __init__(
        self, command: list[str], *, cwd: Path = ROOT, env: Mapping[str, str] | None = None
    ) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.command = [part.format(port=self.port) for part in command]
        self.cwd = cwd
        self.env = {**os.environ, **(env or {})}

    def __enter__(self) -> ServerProcess:
        self.process = subprocess.Popen(
            self.command, cwd=self.cwd, env=self.env, stdout=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{self.command} did not start") from None
                time.sleep(0.05)

    def __exit__(self, *exc: object) -> None:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(10)
        except Exception:
            self.process.kill()
            self.process.wait()


class DemoServer(ServerProcess):
    def __init__(self, loop: str, url: str = "memory://", *, pace: float = PACE) -> None:
        command = [
            sys.executable, "-m", "replayhub", "demo", "--port", "{port}",
            "--pace", str(pace), "--loop", loop, "--url", url,
        ]  # fmt: skip
        super().__init__(command)

    def __enter__(self) -> DemoServer:
        super().__enter__()
        return self


def example_app_server(app: str, loop: str, env: Mapping[str, str] | None = None) -> ServerProcess:
    """``app`` (``module:attribute`` under docs/examples) on uvicorn for
    asyncio, Hypercorn's trio worker for trio."""
    if loop == "trio":
        command = [
            sys.executable, "-m", "hypercorn", "--worker-class", "trio",
            "--bind", "127.0.0.1:{port}", "--graceful-timeout", "1", app,
        ]  # fmt: skip
    else:
        command = [
            sys.executable,
            "-m",
            "uvicorn",
            app,
            "--port",
            "{port}",
            "--log-level",
            "warning",
        ]
    return ServerProcess(command, cwd=EXAMPLES, env=env)
