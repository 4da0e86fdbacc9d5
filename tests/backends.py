"""The backends the contract tests run against, and how to reach each."""

from __future__ import annotations

from collections.abc import Callable

from replayhub.backends import Backend, backend_from_url

from .redis_server import RedisServer

BACKEND_KINDS = ["memory", "redis"]


class BackendServers:
    """Makes backends of a given kind for one test; Redis ones on the test
    session's own server, started on first use."""

    def __init__(self, redis_server: Callable[[], RedisServer]) -> None:
        self._redis_server = redis_server

    def backend(self, kind: str, *, namespace: str) -> Backend:
        if kind == "memory":
            return backend_from_url("memory://", namespace=namespace)
        if kind == "redis":
            return backend_from_url(self._redis_server().url, namespace=namespace)
        raise AssertionError(f"unknown backend kind {kind!r}")
