"""The backends the contract tests run against, and how to reach each."""

from __future__ import annotations

from collections.abc import Callable

from replayhub.backends import Backend, backend_from_url

#: memory; Redis plain; Redis as a least-privilege ACL user; Redis over TLS;
#: a Redis Cluster of three primaries.
BACKEND_KINDS = ["memory", "redis", "redis-acl", "redis-tls", "redis-cluster"]


class BackendServers:
    """Makes backends of a given kind for one test; Redis ones on servers of
    the test session, started on first use. ``url_of`` gives a kind's URL."""

    def __init__(self, url_of: Callable[[str], str]) -> None:
        self._url_of = url_of

    def backend(self, kind: str, *, namespace: str) -> Backend:
        if kind == "memory":
            return backend_from_url("memory://", namespace=namespace)
        return backend_from_url(self._url_of(kind), namespace=namespace)
