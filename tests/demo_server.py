"""The demo app (`replayhub demo`) running in a subprocess on a free port."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from .redis_server import free_port

ROOT = Path(__file__).resolve().parent.parent
PACE = 0.01
WORDS = 60  # the demo's reply length


class DemoServer:
    def __init__(self, loop: str, url: str = "memory://", *, pace: float = PACE) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.command = [
            sys.executable, "-m", "replayhub", "demo", "--port", str(self.port),
            "--pace", str(pace), "--loop", loop, "--url", url,
        ]  # fmt: skip

    def __enter__(self) -> DemoServer:
        self.process = subprocess.Popen(self.command, cwd=ROOT, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("demo server did not start") from None
                time.sleep(0.05)

    def __exit__(self, *exc: object) -> None:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(10)
        except Exception:
            self.process.kill()
            self.process.wait()
