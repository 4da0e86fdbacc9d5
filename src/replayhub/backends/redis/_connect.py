"""Redis deployments by URL: one server, a Redis Cluster, or a primary found
through Sentinel; each opened as a coredis client.

``redis://`` / ``rediss://`` / ``unix://``
    One server (coredis :class:`~coredis.Redis`).
``redis+cluster://[user:password@]host:port[,host:port...][?options]``
    Redis Cluster (coredis :class:`~coredis.RedisCluster`); every host is a
    startup node. ``rediss+cluster://`` for TLS.
``redis+sentinel://[user:password@]host:port[,host:port...]/service[/db]``
    The primary of ``service`` as the Sentinels at the given addresses name
    it (coredis :class:`~coredis.sentinel.Sentinel`); the user and password
    are the data nodes'. ``?sentinel_password=`` for Sentinels that need one.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from ..._errors import InvalidInputError


class Topology(enum.Enum):
    SINGLE = "single"
    CLUSTER = "cluster"
    SENTINEL = "sentinel"


SCHEMES = {
    "redis": Topology.SINGLE,
    "rediss": Topology.SINGLE,
    "unix": Topology.SINGLE,
    "redis+cluster": Topology.CLUSTER,
    "rediss+cluster": Topology.CLUSTER,
    "redis+sentinel": Topology.SENTINEL,
}


@dataclass(frozen=True)
class RedisTarget:
    """A parsed Redis URL: what to connect to, and how."""

    url: str
    topology: Topology
    hosts: tuple[tuple[str, int], ...] = ()
    username: str | None = None
    password: str | None = None
    service: str = ""
    db: int = 0
    options: dict[str, str] = field(default_factory=dict)

    @property
    def where(self) -> str:
        """Where it points, without credentials (for messages and reprs)."""
        scheme = urlsplit(self.url).scheme
        if self.topology is Topology.SINGLE:
            parts = urlsplit(self.url)
            if scheme == "unix":
                return f"unix://{parts.path}"
            return f"{scheme}://{parts.hostname}:{parts.port or 6379}"
        hosts = ",".join(f"{host}:{port}" for host, port in self.hosts)
        suffix = f"/{self.service}" if self.topology is Topology.SENTINEL else ""
        return f"{scheme}://{hosts}{suffix}"


def parse_url(url: str) -> RedisTarget:
    """Check a Redis URL and split it into its parts.

    :raises ~replayhub.InvalidInputError: when it is not one of the shapes
        above.
    """
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise InvalidInputError(f"malformed Redis URL {url!r}: {exc}") from exc
    topology = SCHEMES.get(parts.scheme)
    if topology is None:
        raise InvalidInputError(f"not a Redis URL: {url!r}")
    if topology is Topology.SINGLE:
        if parts.scheme != "unix" and not parts.hostname:
            raise InvalidInputError(f"Redis URL has no host: {url!r}")
        try:
            parts.port  # noqa: B018 - validates the port
        except ValueError as exc:
            raise InvalidInputError(f"bad port in Redis URL {url!r}") from exc
        return RedisTarget(url, topology)

    userinfo, _, hostlist = parts.netloc.rpartition("@")
    username, _, password = userinfo.partition(":")
    hosts = tuple(_host_port(item, url) for item in hostlist.split(","))
    path = [segment for segment in parts.path.split("/") if segment]
    service, db = "", 0
    if topology is Topology.SENTINEL:
        if not path or len(path) > 2:
            raise InvalidInputError(f"Sentinel URL needs /service[/db]: {url!r}")
        service = unquote(path[0])
        db = _db(path[1] if len(path) == 2 else "0", url)
    elif path:
        raise InvalidInputError(f"a Redis Cluster URL takes no path (no databases): {url!r}")
    return RedisTarget(
        url,
        topology,
        hosts=hosts,
        username=unquote(username) or None,
        password=unquote(password) or None,
        service=service,
        db=db,
        options=dict(parse_qsl(parts.query)),
    )


def _host_port(item: str, url: str) -> tuple[str, int]:
    parts = urlsplit(f"//{item}")
    try:
        port = parts.port
    except ValueError as exc:
        raise InvalidInputError(f"bad port in Redis URL {url!r}") from exc
    if not parts.hostname or port is None:
        raise InvalidInputError(f"every host needs host:port in Redis URL {url!r}")
    return parts.hostname, port


def _db(text: str, url: str) -> int:
    if not text.isdigit():
        raise InvalidInputError(f"bad database number in Redis URL {url!r}")
    return int(text)


#: Pool slots per server (per node on a cluster): one for Pub/Sub, the rest
#: for commands, which share connections (each is released once sent).
MAX_CONNECTIONS = 4


@asynccontextmanager
async def open_client(target: RedisTarget, *, reply_timeout: float) -> AsyncIterator[Any]:
    """An open coredis client for the target (entered as ``async with``),
    on a pool of :data:`MAX_CONNECTIONS` that keeps its slots (``_coredis``)."""
    import coredis
    from coredis.connection import TCPLocation
    from coredis.exceptions import ClusterDownError
    from coredis.exceptions import ConnectionError as RedisConnectionError
    from coredis.retry import CompositeRetryPolicy, ConstantRetryPolicy

    from ._coredis import SlotReturningClusterPool, SlotReturningPool, SlotReturningSentinelPool

    options: dict[str, Any] = {
        "stream_timeout": reply_timeout,
        "connect_timeout": reply_timeout,
        "max_connections": MAX_CONNECTIONS,
    }
    # coredis's own defaults: a lost connection or a timeout is retried twice.
    retry = ConstantRetryPolicy((RedisConnectionError, TimeoutError), retries=2, delay=0.01)
    if target.topology is Topology.SINGLE:
        pool = SlotReturningPool.from_url(target.url, **options)
        async with coredis.Redis(connection_pool=pool, retry_policy=retry) as client:
            yield client
        return
    credentials: dict[str, Any] = {"username": target.username, "password": target.password}
    if target.topology is Topology.CLUSTER:
        first_host, first_port = target.hosts[0]
        scheme = "rediss" if target.url.startswith("rediss") else "redis"
        query = urlsplit(target.url).query
        cluster_pool = SlotReturningClusterPool.from_url(
            f"{scheme}://{first_host}:{first_port}/" + (f"?{query}" if query else ""),
            startup_nodes=[TCPLocation(host, port) for host, port in target.hosts],
            max_connections_per_node=True,
            **credentials,
            **options,
        )
        cluster_retry = CompositeRetryPolicy(
            ConstantRetryPolicy((ClusterDownError,), retries=2, delay=0.1), retry
        )
        async with coredis.RedisCluster(
            connection_pool=cluster_pool, retry_policy=cluster_retry
        ) as client:
            yield client
        return
    sentinel_options: dict[str, Any] = {
        "stream_timeout": reply_timeout,
        "connect_timeout": reply_timeout,
    }
    if "sentinel_password" in target.options:
        sentinel_options["password"] = target.options["sentinel_password"]
    async with AsyncExitStack() as stack:
        sentinel = await stack.enter_async_context(
            coredis.Sentinel(
                [TCPLocation(host, port) for host, port in target.hosts],
                sentinel_kwargs=sentinel_options,
                retry_policy=retry,
                db=target.db,
                **credentials,
                **options,
            )
        )
        yield await stack.enter_async_context(
            sentinel.primary_for(target.service, connection_pool_class=SlotReturningSentinelPool)
        )
