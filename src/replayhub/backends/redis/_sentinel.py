"""Behind Sentinel, a write counts once a failover cannot lose it.

After a failover the old primary keeps taking writes until Sentinel demotes
it (seconds later: Sentinel reconfigures it on a later round of checks), and
the client keeps its open connections to it; those writes vanish when the
old primary resyncs from the new one. So every write whose success reaches a
caller (claim, append, renewal, finish, cancel, remove) is followed by
``WAIT 1`` on the same connection, and counts as done when

- a replica acknowledged it (promoting that replica keeps it), or
- the Sentinels, asked after the write, name the node it went to as the
  primary with no failover in progress (a primary left without replicas,
  say after its only replica was promoted from it: no node can replace it
  with older data).

Otherwise the pool drops its connections, so the next command asks Sentinel
where the primary is, and the write fails as a retryable
:class:`~replayhub.BackendUnavailableError`. A producer retries its batch on
whichever node is primary then: the append script skips what already landed
and refuses a batch that no longer follows the stored log, so an event lost
with the old primary fails the producer instead of leaving a gap.

A ``READONLY`` reply (the old primary, demoted now) drops the connections
too: without that, the client would stay on the replica until it restarts.
So does a read that found a lease expired, unless the Sentinels confirm the
node: a hub that only reads would otherwise judge a live session abandoned
from the old primary, whose copy of the lease its producer no longer renews.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anyio

from ..._errors import BackendUnavailableError

#: Milliseconds ``WAIT`` gives a replica to acknowledge a write. A loopback
#: or LAN replica takes well under one; past this the Sentinels are asked,
#: so a primary without replicas costs its writes this much more.
REPLICA_WAIT_MS = 100


_CURRENT: Any = object()


def names_primary(ip: str, port: int, flags: str, location: tuple[str, int]) -> bool:
    """Whether a Sentinel's view of the service (its primary's ``ip``,
    ``port`` and comma-separated ``flags``) confirms ``location`` as the
    primary: the same node, and no failover under way."""
    if "failover_in_progress" in flags.split(","):
        return False
    return (ip, port) == (location[0], location[1])


def not_the_primary(location: object, service: str) -> BackendUnavailableError:
    """The retryable error of a write the Sentinels do not confirm."""
    return BackendUnavailableError(
        f"{location or 'the node written to'} is not the primary the Sentinels of "
        f"{service!r} name, or a failover is under way: retried on the primary"
    )


class PrimaryGuard:
    """Runs the writes of a client made by ``Sentinel.primary_for``."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._pool = client.connection_pool  # a SentinelConnectionPool
        self._service = self._pool.service_name

    async def run(
        self, script: Any, keys: Sequence[str], args: Sequence[Any], *, confirm: bool
    ) -> Any:
        """The script's reply; with ``confirm``, once its write is safe from
        a failover."""
        from coredis.exceptions import ReadOnlyError, UnblockedError

        before = self._pool.location
        try:
            if not confirm:
                return await script(keys=keys, args=args)
            # Shielded: coredis 6.9 loses a pool slot for a pipeline or a
            # blocking command (WAIT) cancelled mid-flight. Bounded all the
            # same: WAIT by its timeout, the replies by the stream timeout.
            with anyio.CancelScope(shield=True):
                async with self._client.pipeline(transaction=False) as pipe:
                    reply_request = script(keys=keys, args=args, client=pipe)
                    replicas_request = pipe.wait(1, REPLICA_WAIT_MS)
                reply, replicas = await reply_request, await replicas_request
        except (ReadOnlyError, UnblockedError):
            # READONLY: the node written to is a replica now; UNBLOCKED: the
            # WAIT was cut short as it became one. The write is retried on
            # the primary the Sentinels name (scripts skip what landed).
            self.move()
            raise
        if replicas < 1:
            await self.check_primary(written_to=self._where_written(before))
        return reply

    async def check_primary(self, *, written_to: Any = _CURRENT) -> None:
        """Return if the Sentinels name the node the client writes to (or
        ``written_to``) the primary; otherwise move, and raise
        :class:`BackendUnavailableError`."""
        location = self._pool.location if written_to is _CURRENT else written_to
        if location is not None and await self._named_primary(location):
            return
        self.move()
        raise not_the_primary(location, self._service)

    def move(self) -> None:
        """Drop every connection: the next one asks Sentinel where to go."""
        self._pool.disconnect()
        self._pool.location = None  # known again once a connection is made

    def _where_written(self, before: Any) -> Any:
        """The node a command sent after ``before`` was read went to, or
        ``None`` if a move made that uncertain."""
        after = self._pool.location
        if before is None:  # moved: the command made a new connection
            return after
        return before if before == after else None

    async def _named_primary(self, location: Any) -> bool:
        """Whether a Sentinel names ``location`` the primary, no failover running."""
        from coredis.exceptions import RedisError

        for sentinel in self._pool.sentinel_manager.sentinels:
            try:
                state = await sentinel.sentinel_master(self._service)
            except (RedisError, OSError, TimeoutError):
                continue
            return names_primary(
                state.get("ip", b"").decode(),
                int(state.get("port", 0)),
                state.get("flags", b"").decode(),
                (location.host, location.port),
            )
        return False
