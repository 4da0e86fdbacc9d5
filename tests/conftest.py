"""Shared fixtures: every async test runs on asyncio and trio, and every
contract test against every backend."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Protocol, Unpack

import pytest

from replayhub import Hub, HubOptions
from replayhub.backends import Backend

from .backends import BACKEND_KINDS, REDIS_PY_KINDS, SMOKE_KINDS, BackendServers
from .redis_server import RedisClusterNodes, RedisServer, acl_server, tls_server


# anyio_mode = "auto" (pyproject.toml) runs every coroutine test with this
# fixture, so on both event loops.
@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class HubFactory(Protocol):
    def __call__(
        self, *, wrap: Callable[[Backend], Backend] | None = None, **options: Unpack[HubOptions]
    ) -> Hub: ...


_namespaces = itertools.count()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """The test session's Redis; tests keep apart by namespace."""
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def fresh_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of this test's own, for tests that kill or pause it."""
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture(params=["coredis", "redis-py"])
def redis_driver(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Runs the test once per Redis driver (redis-py on asyncio only): the
    URLs of the test's single servers name it."""
    driver = str(request.param)
    monkeypatch.setattr(RedisServer, "driver", driver)
    return driver


@pytest.fixture(scope="session")
def redis_acl_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis whose only user may touch just the test namespaces (``t*``)."""
    server = acl_server(tmp_path_factory.mktemp("redis-acl"), pattern="t*").start()
    yield f"redis://app:app-secret@127.0.0.1:{server.port}/0?driver=coredis"
    server.stop()


@pytest.fixture(scope="session")
def redis_tls_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A TLS-only Redis with a CA made for it."""
    server, url = tls_server(tmp_path_factory.mktemp("redis-tls"))
    yield url
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterNodes]:
    """A Redis Cluster of three primaries, shared by the test session (tests
    keep apart by namespace; some pause a node or move a slot, which the
    others do not notice)."""
    cluster = RedisClusterNodes(tmp_path_factory.mktemp("redis-cluster")).start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def redis_cluster_url(redis_cluster: RedisClusterNodes) -> str:
    return redis_cluster.url


@pytest.fixture
def backend_servers(request: pytest.FixtureRequest) -> BackendServers:
    def url_of(kind: str) -> str:
        if kind == "redis-py-cluster":  # one of REDIS_PY_KINDS too: first, or a single server
            cluster: RedisClusterNodes = request.getfixturevalue("redis_cluster")
            return cluster.url.replace("driver=coredis", "driver=redis-py")
        if kind in ("redis", *REDIS_PY_KINDS):
            server: RedisServer = request.getfixturevalue("redis_server")
            if kind == "redis":
                return server.url
            if kind == "redis-py":
                return f"{server.plain_url}?driver=redis-py"
            return server.plain_url  # redis-py-client: the test makes the client
        url: str = request.getfixturevalue(f"{kind.replace('-', '_')}_url")
        return url

    return BackendServers(url_of)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # Every backend, unless the test names its own (a layer above the
    # backend contract needs only one backend per kind of storage).
    chosen = any(
        "backend_kind" in str(marker.args[0])
        for marker in metafunc.definition.iter_markers("parametrize")
    )
    if "backend_kind" in metafunc.fixturenames and not chosen:
        smoke = metafunc.module.__name__.endswith(".test_backend_contract")
        metafunc.parametrize("backend_kind", BACKEND_KINDS + (SMOKE_KINDS if smoke else []))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # redis-py runs on asyncio only: its kinds are not collected on trio.
    kept, dropped = [], []
    for item in items:
        params = getattr(item, "callspec", None)
        params = params.params if params is not None else {}
        redis_py = (
            params.get("backend_kind") in REDIS_PY_KINDS or params.get("redis_driver") == "redis-py"
        )
        if redis_py and params.get("anyio_backend") == "trio":
            dropped.append(item)
        else:
            kept.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.fixture
def make_hub(backend_kind: str, backend_servers: BackendServers) -> HubFactory:
    """Hubs on the backend under test, in a namespace unique to the test.

    ``wrap`` puts a test wrapper (fault injection) around the real backend.
    """
    namespace = f"t{next(_namespaces)}"

    def make(
        *, wrap: Callable[[Backend], Backend] | None = None, **options: Unpack[HubOptions]
    ) -> Hub:
        options.setdefault("namespace", namespace)
        backend = backend_servers.backend(backend_kind, namespace=options["namespace"])
        return Hub(wrap(backend) if wrap else backend, **options)

    return make


@pytest.fixture
async def hub(make_hub: HubFactory) -> AsyncIterator[Hub]:
    # Five seconds: on a loaded machine (two test workers, a cluster each) a
    # one-second lease was seen to lapse between heartbeats, and on a slow
    # day a two-second one (a renewal cut short by the lease's own deadline).
    # Tests of what a lease does set their own.
    async with make_hub(lease_ttl=5.0, retention=60.0) as opened:
        yield opened
