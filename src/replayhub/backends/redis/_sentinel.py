"""Behind Sentinel, a write counts once a failover cannot lose it.

After a failover the old primary keeps taking writes until Sentinel demotes
it (seconds later: Sentinel reconfigures it on a later round of checks), and
the client keeps connections open to it; those writes vanish when the old
primary resyncs from the new one. So every write whose success reaches a
caller (claim, append, renewal, finish, cancel, remove) is followed by
``WAIT 1`` on the same connection, and counts as done when

- a replica acknowledged it (promoting that replica keeps it), or
- the Sentinels, asked after the write, name the node it went to as the
  primary with no failover in progress (a primary left without replicas,
  say after its only replica was promoted from it: no node can replace it
  with older data).

"The node it went to" is the address of the connection the write ran on,
never the pool's record of the primary: another command, reconnecting at
the same time, updates that record while a connection opened before it
still writes to the old primary (seen under load: a write acknowledged on
the old primary, lost with it).

Otherwise the pool drops its connections, so the next command asks Sentinel
where the primary is, and the write fails as a retryable
:class:`~replayhub.BackendUnavailableError`. A producer retries its batch on
whichever node is primary then: the append script skips what already landed
and refuses a batch that no longer follows the stored log, so an event lost
with the old primary fails the producer instead of leaving a gap.

A ``READONLY`` reply (the old primary, demoted now) drops the connections
too: without that, the client would stay on the replica until it restarts.
So does a read that found a lease expired (``confirm_if``), unless the
Sentinels name the node that read: a hub that only reads would otherwise
judge a live session abandoned from the old primary, whose copy of the
lease its producer no longer renews.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import anyio

from ..._errors import BackendUnavailableError

#: Milliseconds ``WAIT`` gives a replica to acknowledge a write. A loopback
#: or LAN replica takes well under one; past this the Sentinels are asked,
#: so a primary without replicas costs its writes this much more.
REPLICA_WAIT_MS = 100


#: Whether a reply counts only from the primary the Sentinels name (a read
#: that found a lease expired: see above).
ReplyCheck = Callable[[Any], bool]


def needs_confirming(reply: Any, replicas: int | None, confirm_if: ReplyCheck | None) -> bool:
    """Whether ``reply`` counts only once the Sentinels name the node that
    gave it the primary: a write no replica acknowledged (``replicas``,
    ``WAIT``'s answer; ``None`` for a read), or a reply ``confirm_if`` picks."""
    if replicas is not None:
        return replicas < 1
    return confirm_if is not None and confirm_if(reply)


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
    """Runs the scripts of a client made by ``Sentinel.primary_for``."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._pool = client.connection_pool  # a SentinelConnectionPool
        self._service = self._pool.service_name

    async def run(
        self,
        script: Any,
        keys: Sequence[str],
        args: Sequence[Any],
        *,
        write: bool,
        confirm_if: ReplyCheck | None = None,
    ) -> Any:
        """The script's reply; for a ``write``, once it is safe from a
        failover; where ``confirm_if(reply)`` holds, once the Sentinels name
        the node that ran it the primary."""
        from coredis.exceptions import ReadOnlyError, UnblockedError

        if not write and confirm_if is None:
            return await script(keys=keys, args=args)
        try:
            # Shielded: coredis 6.9 loses a pool slot for a pipeline or a
            # blocking command (WAIT) cancelled mid-flight. Bounded all the
            # same: WAIT by its timeout, the replies by the stream timeout.
            with anyio.CancelScope(shield=True):
                async with self._client.pipeline(transaction=False) as pipe:
                    # Taken here, so that its node is known (a connection
                    # keeps its location for life); the pipeline releases
                    # it on exit as it would its own (coredis's own watch()
                    # sets it the same way).
                    connection = await self._pool.get_connection()
                    pipe._connection = connection
                    reply_request = script(keys=keys, args=args, client=pipe)
                    replicas_request = pipe.wait(1, REPLICA_WAIT_MS) if write else None
                reply = await reply_request
                replicas = None if replicas_request is None else await replicas_request
        except (ReadOnlyError, UnblockedError):
            # READONLY: the node written to is a replica now; UNBLOCKED: the
            # WAIT was cut short as it became one. The write is retried on
            # the primary the Sentinels name (scripts skip what landed).
            self.move()
            raise
        if needs_confirming(reply, replicas, confirm_if):
            await self.check_primary(connection.location)
        return reply

    async def check_primary(self, location: Any) -> None:
        """Return if the Sentinels name ``location`` the primary; otherwise
        move, and raise :class:`BackendUnavailableError`."""
        if await self._named_primary(location):
            return
        self.move()
        raise not_the_primary(location, self._service)

    def move(self) -> None:
        """Drop every connection: the next one asks Sentinel where to go."""
        self._pool.disconnect()
        self._pool.location = None  # known again once a connection is made

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
