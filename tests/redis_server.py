"""Real redis-server processes for tests: free loopback port, own temp dir,
stopped when the test (or the session) is done. Never a server we did not
start."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_server_binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        # A missing server is a failure, never a skip: scripts/check installs it.
        pytest.fail("redis-server is not installed; run scripts/check, which installs it")
    return binary


class RedisServer:
    """One redis-server process. ``extra`` are more config directives."""

    def __init__(self, directory: Path, *, extra: tuple[str, ...] = ()) -> None:
        self.directory = directory
        self.port = free_port()
        self.extra = extra
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, *, ready: Callable[[], bool] | None = None) -> RedisServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        args = [
            redis_server_binary(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.directory),
            "--logfile", str(self.directory / "redis.log"),
            *self.extra,
        ]  # fmt: skip
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not (ready or self.ping)():
            if self.process.poll() is not None or time.monotonic() > deadline:
                log = (self.directory / "redis.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server did not start on {self.port}:\n{log}")
            time.sleep(0.02)
        return self

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith((b"+PONG", b"-NOAUTH"))
        except OSError:
            return False

    def command(self, *args: str) -> bytes:
        """Run one command through redis-cli and return its raw output."""
        cli = shutil.which("redis-cli")
        assert cli is not None
        return subprocess.run(
            [cli, "-p", str(self.port), *args], check=True, capture_output=True, timeout=10
        ).stdout

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


def acl_server(directory: Path, *, pattern: str = "app:*") -> RedisServer:
    # The least a replayhub user needs: its scripts, Pub/Sub and the index
    # listing, on its own keys and channels (documented in docs/redis.md).
    acl = (
        f"user app on >app-secret ~{pattern} &{pattern} "
        "+evalsha +eval +script|load +ping +hello +client|setname "
        "+subscribe +unsubscribe +zrange +zrem "
        # what the scripts call
        "+time +hgetall +hset +del +pexpire +pttl +zadd +xadd +xrange +publish"
    )
    (directory).mkdir(parents=True, exist_ok=True)
    (directory / "users.acl").write_text(acl + "\nuser default off\n")
    return RedisServer(directory, extra=("--aclfile", str(directory / "users.acl")))


def certificates(directory: Path) -> tuple[Path, Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca, key, csr, cert = (
        directory / name for name in ("ca.key", "ca.crt", "s.key", "s.csr", "s.crt")
    )

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=test-ca",
        "-keyout", str(ca_key), "-out", str(ca))  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
        "-keyout", str(key), "-out", str(csr))  # fmt: skip
    extensions = directory / "san.ext"
    extensions.write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
        "-days", "1", "-out", str(cert), "-extfile", str(extensions))  # fmt: skip
    return ca, cert, key


def tls_server(directory: Path) -> tuple[RedisServer, str]:
    """A started TLS-only redis-server with a CA made for it, and its URL."""
    ca, cert, key = certificates(directory / "certs")
    server = RedisServer(directory / "redis")
    port = server.port
    server.extra = (
        "--port", "0", "--tls-port", str(port), "--tls-cert-file", str(cert),
        "--tls-key-file", str(key), "--tls-ca-cert-file", str(ca), "--tls-auth-clients", "no",
    )  # fmt: skip
    server.start(ready=lambda: tls_ready(port, ca))
    return server, f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={ca}"


def tls_ready(port: int, ca: Path) -> bool:
    import ssl

    context = ssl.create_default_context(cafile=str(ca))
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=0.5) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            tls.sendall(b"PING\r\n")
            return tls.recv(64).startswith(b"+PONG")
    except OSError:
        return False
