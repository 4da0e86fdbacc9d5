"""Shared fixtures: every async test runs on asyncio and trio, and every
contract test against every backend."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable
from typing import Protocol, Unpack

import pytest

from replayhub import Hub, HubOptions
from replayhub.backends import Backend

from .backends import BACKEND_KINDS, BackendServers


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


@pytest.fixture
def backend_servers() -> BackendServers:
    return BackendServers()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend_kind" in metafunc.fixturenames:
        metafunc.parametrize("backend_kind", BACKEND_KINDS)


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
    async with make_hub(lease_ttl=1.0, retention=60.0) as opened:
        yield opened
