"""The backends the contract tests run against, and how to reach each."""

from __future__ import annotations

from replayhub.backends import Backend, backend_from_url

BACKEND_KINDS = ["memory"]


class BackendServers:
    """Makes backends of a given kind for one test."""

    def backend(self, kind: str, *, namespace: str) -> Backend:
        if kind == "memory":
            return backend_from_url("memory://", namespace=namespace)
        raise AssertionError(f"unknown backend kind {kind!r}")
