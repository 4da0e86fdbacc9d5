"""What the Redis backend needs of a Redis client library.

The backend (keys, Lua scripts, replies, notifications) is written once; a
driver is one client library behind it: coredis (asyncio and Trio) or
redis-py (asyncio). A driver runs the backend's scripts by name, reads and
trims the namespace index, opens Pub/Sub clients, and turns its library's
errors into the library's own at one boundary (:meth:`RedisDriver.errors`):

* a refusal that retrying cannot mend (``OOM``, ``NOPERM``, ``WRONGTYPE``, a
  script error, ``READONLY`` from a plain server) becomes
  :class:`~replayhub.StorageRefusedError`;
* anything else from the server or the network (refused or reset
  connections, timeouts, ``LOADING``, ``BUSY``, ``TRYAGAIN``,
  ``CLUSTERDOWN``, ``MASTERDOWN``, ``NOREPLICAS``, ``MOVED``/``ASK``, and
  ``READONLY`` behind Sentinel, where the client follows the failover)
  becomes :class:`~replayhub.BackendUnavailableError`, which callers retry;
* cancellation and bugs pass through as themselves.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from typing import Any, Protocol

import anyio

from ..._errors import BackendUnavailableError, StorageRefusedError

#: Error replies that a moment mends: a server loading its data, busy with a
#: script, a cluster mid-failover, too few replicas for min-replicas-to-write,
#: a WAIT cut short because its primary was just demoted (a failover).
TRANSIENT_REPLIES = (
    "LOADING",
    "BUSY",
    "TRYAGAIN",
    "CLUSTERDOWN",
    "MASTERDOWN",
    "NOREPLICAS",
    "UNBLOCKED",
)


class DriverName(enum.Enum):
    """The client libraries the Redis backend runs on."""

    COREDIS = "coredis"
    REDIS_PY = "redis-py"


LogRange = tuple[str, str, int | None]
"""An ``XRANGE``: the first and last entry ids, and at most how many entries
(``None``: no ``COUNT``)."""

LogEntry = tuple[bytes, list[bytes]]
"""A log entry as ``XRANGE`` replies: its id, and its fields and values in turn."""


class PubSubMessage(Protocol):
    def __getitem__(self, key: str) -> Any: ...


class RedisDriver(Protocol):
    """One open client of one library, as the backend uses it."""

    name: DriverName
    #: Whether commands made at once share connections (coredis pipelines
    #: them on one): then calls made together cost no more than one after
    #: another. Each redis-py command holds a connection of its own until
    #: answered, and three at once cost a busy process 5-10% more CPU.
    multiplexes: bool

    async def ping(self) -> None: ...

    async def run_script(
        self,
        name: str,
        keys: Sequence[str],
        args: Sequence[Any],
        *,
        confirm_if: Callable[[Any], bool] | None = None,
    ) -> Any:
        """Run the backend script ``name`` (``EVALSHA``, loading it again
        after a ``NOSCRIPT``) on the node that owns ``keys``.

        Behind Sentinel, a write script's reply returns once a failover
        cannot lose its write, and a reply for which ``confirm_if`` holds
        once the Sentinels name the node that ran the script the primary;
        otherwise :class:`~replayhub.BackendUnavailableError` is raised,
        the client having moved if that node is not the primary
        (``_sentinel``)."""
        ...

    async def read_log(
        self, session_key: str | None, log_key: str, ranges: Sequence[LogRange]
    ) -> tuple[dict[bytes, bytes] | None, list[list[LogEntry]]]:
        """``HGETALL session_key`` (unless ``None``), then ``XRANGE log_key
        start end [COUNT count]`` for each range: one round trip to the node
        that holds both keys, but not one snapshot (each command sees the
        keys as they are when it runs; the caller checks what it gets). The
        hash (``None`` if not read), and each range's entries as the scripts
        return them."""
        ...

    async def newest_members(self, key: str, start: int, stop: int) -> list[bytes]:
        """``ZRANGE key start stop REV``."""
        ...

    async def remove_members(self, key: str, members: Sequence[bytes | str]) -> None:
        """``ZREM key member...``."""
        ...

    async def watch_failovers(self, on_failover: Callable[[], None]) -> None:
        """Behind Sentinel: each time the Sentinels announce a new primary,
        drop the connections to the old one, then call ``on_failover``;
        forever. Returns at once elsewhere."""
        ...

    async def refresh_layout(self) -> None:
        """On a cluster, read the slot layout again; a no-op elsewhere."""
        ...

    def open_pubsub(self, home: str) -> AbstractAsyncContextManager[Any]:
        """A new Pub/Sub client (sharded on a cluster) with ``subscribe`` and
        ``unsubscribe`` coroutines taking channel names. ``home`` is a
        channel of the hub's namespace (which its ACL user may subscribe
        to) that no one publishes on, for a driver that must subscribe to
        something before it can read."""
        ...

    async def receive(self, pubsub: Any) -> list[Mapping[str, Any] | None]:
        """Wait for the client's next message and return every one already
        received: dicts with ``type`` (``message``, ``subscribe``,
        ``unsubscribe``, or their sharded names), ``channel`` and ``data``
        (bytes); ``None`` entries are skipped."""
        ...

    def errors(self, what: str) -> AbstractContextManager[None]:
        """Translate the library's errors raised in the block (module docstring),
        each message starting with ``what``."""
        ...


class DriverFactory(Protocol):
    def __call__(
        self, *, scripts: Mapping[str, str], writes: frozenset[str]
    ) -> AbstractAsyncContextManager[RedisDriver]:
        """An open driver that knows ``scripts`` (name to Lua source); those
        named in ``writes`` are confirmed behind Sentinel (``_sentinel``)."""
        ...


Verdict = tuple[bool, str] | None
"""What a driver makes of an exception: ``(True, reply)`` for a refusal,
``(False, message)`` for storage that could not be reached or is briefly
unable, ``None`` for anything that is not its library's or the network's."""


class translate_errors:
    """The block's client-library errors as the library's own (module
    docstring), as ``classify`` judges them; each message starts with ``what``."""

    def __init__(self, what: str, classify: Callable[[BaseException], Verdict]) -> None:
        self._what = what
        self._classify = classify

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        if exc is None or isinstance(exc, anyio.get_cancelled_exc_class()):
            return
        verdict = self._classify(exc)
        if verdict is None:
            return  # cancellation, a bug: raised as itself
        refused, message = verdict
        if refused:
            raise StorageRefusedError(f"{self._what}: Redis refused: {message}") from exc
        raise BackendUnavailableError(f"{self._what}: {message}") from exc
