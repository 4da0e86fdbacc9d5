"""The backends the contract tests run against, and how to reach each."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, Self

from replayhub.backends import Backend, backend_from_url
from replayhub.backends.redis import RedisBackend

#: memory; Redis on coredis; a Redis Cluster of three primaries on coredis;
#: Redis and the Cluster on redis-py: every test of a hub or a backend runs
#: on these (asyncio and Trio; redis-py on asyncio only).
BACKEND_KINDS = [
    "memory",
    "redis",
    "redis-cluster",
    "redis-py",
    "redis-py-cluster",
]
#: A redis-py client made by the test and passed in (``from_client``) is the
#: redis-py backend on a pool it does not own; Redis as a least-privilege ACL
#: user and Redis over TLS change how the client connects and what it may
#: run, not what the scripts do. These run the backend contract and a hub's
#: whole round (test_backend_contract.py), not every test of the layers
#: above again (what is their own, from_client leaving the client open, is
#: in test_drivers.py).
SMOKE_KINDS = ["redis-py-client", "redis-acl", "redis-tls"]
#: The kinds on the redis-py driver, which runs on asyncio only.
REDIS_PY_KINDS = ["redis-py", "redis-py-cluster", "redis-py-client"]


class BackendServers:
    """Makes backends of a given kind for one test; Redis ones on servers of
    the test session, started on first use. ``url_of`` gives a kind's URL."""

    def __init__(self, url_of: Callable[[str], str]) -> None:
        self.url_of = url_of

    def backend(self, kind: str, *, namespace: str) -> Backend:
        if kind == "memory":
            return backend_from_url("memory://", namespace=namespace)
        if kind == "redis-py-client":
            return ClientOfTheTest.on(self.url_of(kind), namespace=namespace)
        return backend_from_url(self.url_of(kind), namespace=namespace)


class ClientOfTheTest(RedisBackend):
    """A backend on a redis-py client made here, as an app would make it,
    closed when the backend closes (the hub itself leaves it open)."""

    _own_client: Any

    @classmethod
    def on(cls, url: str, *, namespace: str) -> ClientOfTheTest:
        import redis.asyncio

        client = redis.asyncio.Redis.from_url(url)
        backend = cls.from_client(client, namespace=namespace)
        assert isinstance(backend, ClientOfTheTest)
        backend._own_client = client
        return backend

    @asynccontextmanager
    async def __asynccontextmanager__(self) -> AsyncIterator[Self]:
        try:
            async with super().__asynccontextmanager__() as backend:
                yield backend
        finally:
            await self._own_client.aclose()
