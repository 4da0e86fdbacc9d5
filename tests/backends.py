"""The backends the contract tests run against, and how to reach each."""

from __future__ import annotations

from collections.abc import Callable

from replayhub.backends import Backend, backend_from_url

#: memory; Redis plain; a Redis Cluster of three primaries: every contract
#: test runs on these.
BACKEND_KINDS = ["memory", "redis", "redis-cluster"]
#: Redis as a least-privilege ACL user and Redis over TLS change how the
#: client connects and what it may run, not what the scripts do: they run the
#: backend contract and a hub's whole round (test_backend_contract.py), a smoke
#: subset rather than every contract test again.
SMOKE_KINDS = ["redis-acl", "redis-tls"]


class BackendServers:
    """Makes backends of a given kind for one test; Redis ones on servers of
    the test session, started on first use. ``url_of`` gives a kind's URL."""

    def __init__(self, url_of: Callable[[str], str]) -> None:
        self._url_of = url_of

    def backend(self, kind: str, *, namespace: str) -> Backend:
        if kind == "memory":
            return backend_from_url("memory://", namespace=namespace)
        return backend_from_url(self._url_of(kind), namespace=namespace)
