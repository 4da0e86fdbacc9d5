"""Storage backends and the protocol the core uses to reach them."""

from __future__ import annotations

from urllib.parse import urlsplit

from .._errors import InvalidInputError
from ._protocol import AppendRequest as AppendRequest
from ._protocol import Backend as Backend
from ._protocol import BatchAppender as BatchAppender
from ._protocol import BatchRenewer as BatchRenewer
from ._protocol import CallsOnChange as CallsOnChange
from ._protocol import ReadsEvents as ReadsEvents
from ._protocol import ReleasesClaims as ReleasesClaims
from ._protocol import Renewal as Renewal
from ._protocol import SessionRecord as SessionRecord
from ._protocol import StoresAtOnce as StoresAtOnce
from ._protocol import Watch as Watch
from ._protocol import WatchesAppends as WatchesAppends
from ._protocol import append_each as append_each
from ._protocol import read_events as read_events
from ._watch import AppendListener as AppendListener
from .memory import MemoryBackend as MemoryBackend

__all__ = [
    "AppendListener",
    "AppendRequest",
    "Backend",
    "BatchAppender",
    "BatchRenewer",
    "MemoryBackend",
    "ReadsEvents",
    "ReleasesClaims",
    "SessionRecord",
    "Watch",
    "append_each",
    "backend_from_url",
    "read_events",
]


def backend_from_url(url: str, *, namespace: str, driver: str = "auto") -> Backend:
    """The backend a URL names: ``memory://`` for the in-process one;
    ``redis://``, ``rediss://`` (TLS) and ``unix://`` for one Redis server;
    ``redis+cluster://host:port,host:port`` for Redis Cluster;
    ``redis+sentinel://host:port,host:port/service`` for a primary found
    through Sentinel.

    :param driver: for Redis, the client library: ``"coredis"``,
        ``"redis-py"`` or ``"auto"`` (redis-py on asyncio when it is
        installed, coredis otherwise); also ``?driver=`` in the URL.
    :raises ~replayhub.InvalidInputError: for an unknown scheme or a
        malformed URL.
    """
    if not isinstance(url, str):
        raise InvalidInputError(f"url must be a str, not {type(url).__name__}")
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise InvalidInputError(f"malformed backend URL {url!r}: {exc}") from exc
    if parts.scheme == "memory":
        if driver != "auto":
            raise InvalidInputError(f"driver= is for Redis URLs, not {url!r}")
        if parts.netloc or parts.path not in ("", "/") or parts.query:
            raise InvalidInputError(f"memory:// takes no host, path or options: {url!r}")
        return MemoryBackend()
    from .redis._connect import SCHEMES

    if parts.scheme in SCHEMES:
        from .redis import RedisBackend

        return RedisBackend(url, namespace=namespace, driver=driver)
    raise InvalidInputError(f"unsupported backend URL scheme {parts.scheme!r} in {url!r}")
