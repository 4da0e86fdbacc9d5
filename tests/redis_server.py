"""Real redis-server processes for tests: free loopback port, own temp dir,
stopped when the test (or the session) is done. Never a server we did not
start."""

from __future__ import annotations

import itertools
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

# Ports for the servers tests start: below the kernel's ephemeral range
# (32768-60999 here), so no outgoing connection takes one between the check
# and the server's bind, and a range of its own for each pytest-xdist worker,
# so two workers never pick the same one.
_PORTS_PER_WORKER = 3000
_worker = os.environ.get("PYTEST_XDIST_WORKER", "")
_first_port = 10000 + _PORTS_PER_WORKER * (int(_worker[2:]) + 1 if _worker[2:].isdigit() else 0)
_next_port = itertools.count(random.randrange(_PORTS_PER_WORKER))


def free_port() -> int:
    """A loopback port nothing listens on, from this process's own range."""
    for _ in range(_PORTS_PER_WORKER):
        port = _first_port + next(_next_port) % _PORTS_PER_WORKER
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue  # taken by something else on the machine
            return port
    raise RuntimeError(f"no free port in {_first_port}-{_first_port + _PORTS_PER_WORKER - 1}")


def poll_until(check: Callable[[], bool], *, within: float, what: str) -> None:
    """Call ``check`` every 50 ms until it holds; ``RuntimeError`` after ``within`` s."""
    deadline = time.monotonic() + within
    while not _holds(check):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} within {within}s")
        time.sleep(0.05)


def _holds(check: Callable[[], bool]) -> bool:
    try:
        return check()
    except subprocess.CalledProcessError:
        return False  # a server mid-change (loading a resync, say) refused redis-cli


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
    def plain_url(self) -> str:
        """The server's URL as any client library reads it."""
        return f"redis://127.0.0.1:{self.port}/0"

    #: The Redis driver that :attr:`url` names: coredis, unless a test runs
    #: on each driver (the ``redis_driver`` fixture sets it for its test).
    driver = "coredis"

    @property
    def url(self) -> str:
        """The server's URL for replayhub, naming :attr:`driver`."""
        return f"{self.plain_url}?driver={self.driver}"

    def start(
        self, *, ready: Callable[[], bool] | None = None, config: Path | None = None
    ) -> RedisServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        args = [
            redis_server_binary(),
            *([str(config)] if config else []),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.directory),
            "--logfile", str(self.directory / "redis.log"),
            # A replica syncs at once (the default waits 5 s for more replicas).
            "--repl-diskless-sync-delay", "0",
            # Stopped at once: a primary's shutdown otherwise waits up to 10 s
            # for a replica a test has paused or cut off to catch up.
            "--shutdown-on-sigterm", "now",
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

    def calls(self, command: str) -> int:
        """Calls of ``command`` (lower case) the server has run, refused ones
        and those from inside scripts too."""
        stats = self.command("INFO", "commandstats").decode()
        prefix = f"cmdstat_{command}:"
        line = next((line for line in stats.splitlines() if line.startswith(prefix)), "")
        return int(line.split("calls=")[1].split(",")[0]) if line else 0

    def replication_offset(self) -> int:
        """``master_repl_offset`` on a primary, ``slave_repl_offset`` on a replica."""
        info = self.command("info", "replication").decode()
        key = "slave_repl_offset:" if "role:slave" in info else "master_repl_offset:"
        return int(info.split(key)[1].split()[0])

    def wait_replicated_by(self, replica: RedisServer, timeout: float = 10) -> None:
        """Until ``replica`` has everything this primary has taken so far.

        (``WAIT`` from redis-cli would not do: it waits only for its own
        connection's writes, and redis-cli wrote nothing.)"""
        target = self.replication_offset()
        poll_until(
            lambda: replica.replication_offset() >= target,
            within=timeout,
            what="the replica did not catch up",
        )

    def kill(self) -> None:
        """SIGKILL, as a crash: no shutdown, nothing saved."""
        assert self.process is not None
        self.process.kill()
        self.process.wait()
        self.process = None

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


#: The least a replayhub user needs: its scripts, Pub/Sub and the index
#: listing, then what the scripts call, on its own keys and channels
#: (``{pattern}``); docs/redis.md shows it for namespace ``app``.
ACL_USER = (
    "user app on >app-secret ~{pattern} &{pattern} "
    "+evalsha +eval +script|load +ping +hello +client|setname "
    "+subscribe +unsubscribe +zrange +zrem "
    "+time +hgetall +hmget +hset +del +pexpire +pttl +zadd "
    "+xadd +xrange +xrevrange +xlen +exists +publish"
)


def acl_server(
    directory: Path, *, pattern: str = "app:*", omit: tuple[str, ...] = ()
) -> RedisServer:
    """A server whose one user is :data:`ACL_USER` (less ``omit``)."""
    acl = " ".join(part for part in ACL_USER.format(pattern=pattern).split() if part not in omit)
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
    return server, f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={ca}&driver={RedisServer.driver}"


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


class RedisClusterNodes:
    """A real Redis Cluster on loopback: ``primaries`` primaries, each with
    ``replicas`` replicas, made with ``redis-cli --cluster create``."""

    def __init__(self, directory: Path, *, primaries: int = 3, replicas: int = 0) -> None:
        config = ("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                  "--cluster-node-timeout", "1000")  # fmt: skip
        # The bus port is chosen too: the default (port + 10000) may not exist.
        self.nodes = [
            RedisServer(
                directory / f"node{index}", extra=(*config, "--cluster-port", str(free_port()))
            )
            for index in range(primaries * (1 + replicas))
        ]
        self.replicas = replicas

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{node.port}" for node in self.nodes[:3])
        return f"redis+cluster://{hosts}?driver={RedisServer.driver}"

    def start(self) -> RedisClusterNodes:
        try:
            for node in self.nodes:
                node.start()
            cli = shutil.which("redis-cli")
            assert cli is not None
            addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
            subprocess.run(
                [cli, "--cluster", "create", *addresses, "--cluster-replicas", str(self.replicas),
                 "--cluster-yes"],
                check=True, capture_output=True, timeout=30,
            )  # fmt: skip
            self.wait_healthy()
        except BaseException:
            self.stop()  # the nodes that did start: no server outlives the test
            raise
        return self

    def wait_healthy(self, timeout: float = 20) -> None:
        """Until every running node says the cluster is ok and agrees on who
        owns every slot."""

        def healthy() -> bool:
            running = self.running()
            states = [node.command("cluster", "info") for node in running]
            layouts = {self._slot_owners(node) for node in running}
            return all(b"cluster_state:ok" in state for state in states) and len(layouts) == 1

        poll_until(healthy, within=timeout, what="the cluster did not become healthy")

    @staticmethod
    def _slot_owners(node: RedisServer) -> str:
        lines = node.command("cluster", "nodes").decode().splitlines()
        return "\n".join(
            sorted(
                " ".join([fields[1].split("@")[0], *fields[8:]])
                for fields in (line.split() for line in lines)
                if "master" in fields[2] and "fail" not in fields[2]
            )
        )

    def running(self) -> list[RedisServer]:
        return [node for node in self.nodes if node.process is not None]

    def wait_replicated(self, timeout: float = 20) -> None:
        """Until every replica's link to its primary is up."""
        expected = len(self.nodes) * self.replicas // (1 + self.replicas)

        def linked() -> bool:
            infos = [node.command("info", "replication") for node in self.running()]
            return sum(b"master_link_status:up" in info for info in infos) >= expected

        poll_until(linked, within=timeout, what="the replicas did not connect")

    def node_for_slot(
        self, slot: int, *, primary: bool = True, via: RedisServer | None = None
    ) -> RedisServer:
        """The node serving a slot, as ``via`` (or the first running node) sees it."""
        asked = via or self.running()[0]
        for line in asked.command("cluster", "nodes").decode().splitlines():
            fields = line.split()
            for spec in fields[8:]:
                start, _, end = spec.partition("-")
                if not start.isdigit():
                    continue
                if int(start) <= slot <= int(end or start):
                    port = int(fields[1].split("@")[0].rsplit(":", 1)[1])
                    owner = next(node for node in self.nodes if node.port == port)
                    if primary:
                        return owner
                    return self.replica_of(owner)
        raise LookupError(f"no node serves slot {slot}")

    def serves(self, slot: int, node: RedisServer, *, via: RedisServer | None = None) -> bool:
        """Whether ``node`` serves ``slot`` as ``via`` sees it; no, while it
        lists no node for the slot (for a moment of a failover)."""
        try:
            return self.node_for_slot(slot, via=via) is node
        except LookupError:
            return False

    def node_id(self, node: RedisServer) -> str:
        return node.command("cluster", "myid").decode().strip()

    def replica_of(self, primary: RedisServer) -> RedisServer:
        primary_id = self.node_id(primary)
        for line in primary.command("cluster", "nodes").decode().splitlines():
            fields = line.split()
            if fields[3] == primary_id and "slave" in fields[2]:
                port = int(fields[1].split("@")[0].rsplit(":", 1)[1])
                return next(node for node in self.nodes if node.port == port)
        raise LookupError(f"node {primary.port} has no replica")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


class SentinelSet:
    """A primary, its replica and three Sentinels watching them as ``service``."""

    def __init__(self, directory: Path, *, service: str = "replayhub") -> None:
        self.directory = directory
        self.service = service
        self.primary = RedisServer(directory / "primary")
        self.replica = RedisServer(
            directory / "replica", extra=("--replicaof", "127.0.0.1", str(self.primary.port))
        )
        self.sentinels = [RedisServer(directory / f"sentinel{index}") for index in range(3)]

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{sentinel.port}" for sentinel in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.service}?driver={RedisServer.driver}"

    def start(self) -> SentinelSet:
        self.primary.start()
        self.replica.start()
        for sentinel in self.sentinels:
            sentinel.directory.mkdir(parents=True, exist_ok=True)
            config = sentinel.directory / "sentinel.conf"
            config.write_text(
                f"sentinel monitor {self.service} 127.0.0.1 {self.primary.port} 2\n"
                f"sentinel down-after-milliseconds {self.service} 1000\n"
                f"sentinel failover-timeout {self.service} 5000\n"
                # Known from the start, rather than from the primary's INFO
                # a few seconds later.
                f"sentinel known-replica {self.service} 127.0.0.1 {self.replica.port}\n"
            )
            # redis-server <config> --sentinel: the config file must be first.
            sentinel.extra = ("--sentinel",)
            sentinel.start(config=config)
        self.wait(lambda: self.primary_port() == self.primary.port and self.replicated())
        return self

    def servers(self) -> list[RedisServer]:
        return [self.primary, self.replica, *self.sentinels]

    def primary_port(self) -> int | None:
        for sentinel in self.sentinels:
            if sentinel.process is None:
                continue
            reply = sentinel.command("sentinel", "get-master-addr-by-name", self.service).split()
            if len(reply) == 2:
                return int(reply[1])
        return None

    def replica_promoted(self) -> bool:
        """Whether the Sentinels name the replica the primary: a failover done."""
        return self.primary_port() == self.replica.port

    def demote_old_primary(self) -> None:
        """Make the old primary a replica of the new one, as Sentinel does
        some 8-10 s after a failover here (it waits before reconfiguring a
        node whose role disagrees with its view)."""
        self.primary.command("replicaof", "127.0.0.1", str(self.replica.port))

    def replicated(self) -> bool:
        known = self.sentinels[0].command("sentinel", "replicas", self.service)
        info = self.replica.command("info", "replication")
        return str(self.replica.port).encode() in known and b"master_link_status:up" in info

    @staticmethod
    def wait(check: Callable[[], bool]) -> None:
        poll_until(check, within=30, what="the Sentinel set did not settle")

    def stop(self) -> None:
        for server in self.servers():
            server.stop()
