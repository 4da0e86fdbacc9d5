"""Behind Sentinel, a write counts once a failover cannot lose it.

After a failover the old primary keeps taking writes until Sentinel demotes
it (seconds later: Sentinel reconfigures it on a later round of checks), and
the client keeps connections open to it; those writes vanish when the old
primary resyncs from the new one. So every write whose success reaches a
caller (claim, append, renewal, finish, cancel, remove) is followed by
``WAIT 1`` on the same connection, and counts as done when

- a replica acknowledged it (promoting that replica keeps it), or
- the Sentinels, asked after the write, name the node it went to as the
  primary with no failover in progress, and know no replica they could
  promote in its place (:func:`could_be_promoted`): a primary left without
  replicas, say after its only replica was promoted from it, which no node
  can replace with older data. A replica that is up but has not
  acknowledged (one that has just synchronised acknowledges after up to a
  second; one under load lags) could be promoted without the write: seen
  in the tests, a failover right after start-up lost the session its
  producer had claimed. Such a write waits for a replica to have it
  (:meth:`Guard._wait_for_a_replica`), then fails as
  :class:`NotYetReplicated`.

"The node it went to" is the address of the connection the write ran on,
never the pool's record of the primary: another command, reconnecting at
the same time, updates that record while a connection opened before it
still writes to the old primary (seen under load: a write acknowledged on
the old primary, lost with it).

If the node is not the primary, the pool drops its connections, so the next
command asks Sentinel where the primary is, and the write fails as a retryable
:class:`~replayhub.BackendUnavailableError`. A producer retries its batch on
whichever node is primary then: the append script skips what already landed
and refuses a batch that no longer follows the stored log, so an event lost
with the old primary fails the producer instead of leaving a gap.

A ``READONLY`` reply (the old primary, demoted now) drops the connections
too: without that, the client would stay on the replica until it restarts.
So does a read that found a lease expired (``confirm_if``), unless the
Sentinels name the node that read (it is asked again on a connection taken
for it, as the writes are, and believed from the primary only): a hub that
only reads would otherwise judge a live session abandoned from the old
primary, whose copy of the lease its producer no longer renews. Other reads
go as they come: they cost no more behind Sentinel than elsewhere.

A hub that only reads learns of a failover from the Sentinels themselves
(:class:`FailoverWatch`): each announces a new primary on its
``+switch-master`` channel. Without that, its Pub/Sub client stays on the
old primary, which no longer hears of new writes, and its readers of live
sessions sat still until their lease-long re-read (measured: 11 s with the
default 10 s lease, on every failover).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import anyio

from ..._errors import BackendUnavailableError
from .._retry import Backoff

logger = logging.getLogger(__name__)

#: The channel on which each Sentinel announces a new primary:
#: ``<service> <old ip> <old port> <new ip> <new port>``.
SWITCH_MASTER = "+switch-master"
#: Seconds before listening again to a Sentinel whose connection failed.
LISTEN_RETRY = 1.0

#: Milliseconds ``WAIT`` gives a replica to acknowledge a write. A loopback
#: or LAN replica takes well under one; past this the Sentinels are asked,
#: so a primary without replicas costs its writes this much more.
REPLICA_WAIT_MS = 100


#: Whether a reply counts only from the primary the Sentinels name (a read
#: that found a lease expired: see above).
ReplyCheck = Callable[[Any], bool]


def names_primary(ip: str, port: int, flags: str, location: tuple[str, int]) -> bool:
    """Whether a Sentinel's view of the service (its primary's ``ip``,
    ``port`` and comma-separated ``flags``) confirms ``location`` as the
    primary: the same node, and no failover under way."""
    if "failover_in_progress" in flags.split(","):
        return False
    return (ip, port) == (location[0], location[1])


def could_be_promoted(replica: Mapping[str, Any]) -> bool:
    """Whether a Sentinel might promote this replica of the primary (an
    entry of ``SENTINEL REPLICAS``), as Sentinel itself chooses: one it sees
    up and connected, serving as a replica, with a non-zero priority, whose
    link to the primary has not been down for over ten times the
    down-after period (Sentinel's own bound, as it stands while the primary
    is up; such a replica resynchronises before it could be promoted).

    A replica that has not acknowledged a write may be promoted without it:
    Sentinel picks among these by priority and offset, not by who has what.
    An old primary not yet demoted (listed as a replica, still reporting
    itself primary) is not counted: it lacks every write since the
    failover, and waiting for it to resync would hold every write for the
    seconds until Sentinel demotes it.
    """
    if {"s_down", "o_down", "disconnected"} & set(_text(replica.get("flags", "")).split(",")):
        return False
    if _text(replica.get("role-reported", "")) == "master":
        return False
    if _number(replica.get("slave-priority")) == 0:
        return False
    link_down_ms = _number(replica.get("master-link-down-time"))
    return link_down_ms <= 10 * _number(replica.get("down-after-milliseconds"))


class Standing(enum.Enum):
    """What the Sentinels say of a node a reply came from."""

    CONFIRMED = "confirmed"
    NOT_THE_PRIMARY = "not the primary"
    NOT_ON_A_REPLICA = "not on a replica"


def standing(
    state: Mapping[str, Any], replicas: Sequence[Mapping[str, Any]], location: tuple[str, int]
) -> Standing:
    """A Sentinel's word on ``location``, from its ``SENTINEL MASTER`` state
    and (for a write no replica acknowledged) its ``SENTINEL REPLICAS``."""
    primary = (_text(state.get("ip", "")), int(_text(state.get("port", 0))))
    if not names_primary(*primary, _text(state.get("flags", "")), location):
        return Standing.NOT_THE_PRIMARY
    if any(could_be_promoted(replica) for replica in replicas):
        return Standing.NOT_ON_A_REPLICA
    return Standing.CONFIRMED


async def ask_sentinels(
    sentinels: Sequence[Any],
    service: str,
    location: tuple[str, int],
    *,
    replicas_of: Callable[[Any], Awaitable[Sequence[Mapping[str, Any]]]] | None,
    errors: tuple[type[BaseException], ...],
) -> Standing:
    """The word of the first Sentinel that answers; with ``replicas_of``
    (for a write), whether a replica it could promote instead lacks the
    write too. No answer is no confirmation."""
    for sentinel in list(sentinels):  # a copy: a discovery may reorder it meanwhile
        try:
            state = await sentinel.sentinel_master(service)
            replicas = () if replicas_of is None else await replicas_of(sentinel)
        except errors:
            continue
        return standing(state, replicas, location)
    return Standing.NOT_THE_PRIMARY


class NotThePrimary(BackendUnavailableError):
    """The node a reply came from is not (or no longer) the primary."""


def not_the_primary(location: object, service: str) -> NotThePrimary:
    """The retryable error of a reply the Sentinels do not confirm."""
    return NotThePrimary(
        f"{location or 'the node written to'} is not the primary the Sentinels of "
        f"{service!r} name, or a failover is under way: retried on the primary"
    )


#: Seconds a write no replica has, on a primary with a replica the
#: Sentinels could promote, waits for one before it is reported
#: (:class:`NotYetReplicated`): a replica that has just synchronised
#: acknowledges within a second.
CATCH_UP = 2.0


def is_a_replica_now(exc: BaseException) -> bool:
    """Whether a reply error says the node became a replica (``WAIT`` is
    refused there; ``UNBLOCKED``: it became one during the ``WAIT``)."""
    message = str(exc)
    return "UNBLOCKED" in message or "replica instances" in message


class NotYetReplicated(BackendUnavailableError):
    """A write that landed on the primary, which no replica had after
    :data:`CATCH_UP` seconds while the Sentinels could promote one."""


def unconfirmed(verdict: Standing, location: object, service: str) -> BackendUnavailableError:
    """The retryable error of a reply whose :class:`Standing` is not
    ``CONFIRMED``."""
    if verdict is Standing.NOT_ON_A_REPLICA:
        return NotYetReplicated(
            f"no replica of {location} (primary of {service!r}) had the write after "
            f"{CATCH_UP} s, and the Sentinels could promote one: retried"
        )
    return not_the_primary(location, service)


def _number(value: Any) -> int:
    """A reply field as a number (0 if missing or not one)."""
    try:
        return int(_text(value))
    except ValueError:
        return 0


def _text(value: Any) -> str:
    """A reply field as text, whichever way the client parsed it."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, (set, frozenset)):  # redis-py parses flags into a set
        return ",".join(sorted(map(_text, value)))
    return str(value)


class Guard:
    """What the guards of both client libraries share: a client made through
    the Sentinels (coredis's ``Sentinel.primary_for``, redis-py's
    ``master_for``), asking them about the nodes replies came from, and
    following their announcements. A guard for a client library says how to
    run a script on a connection it knows (:meth:`_run_on_known_node`), how
    to move its pool (:meth:`move`), which errors its clients raise, what
    its Sentinel clients call ``SENTINEL REPLICAS``, and how to listen to
    one (:meth:`_listen_to`)."""

    #: The name of the Sentinel client's ``SENTINEL REPLICAS`` method.
    _replicas_method: str

    def __init__(self, client: Any, *, errors: tuple[type[BaseException], ...]) -> None:
        self._client = client
        self._pool = client.connection_pool  # the library's Sentinel pool
        self._service: str = self._pool.service_name
        self._errors = (*errors, OSError, TimeoutError)  # its library's, the network's

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
        failover; where ``confirm_if(reply)`` holds, only from a node the
        Sentinels name the primary."""
        if not write:
            reply = await script(keys=keys, args=args)
            if confirm_if is None or not confirm_if(reply):
                return reply
            # Rare (a lease found expired), and which node answered is not
            # known: asked again where it is, and believed from the primary
            # only (the node that answered first may have been the old one).
        return await self._run_on_known_node(script, keys, args, write=write)

    async def _run_on_known_node(
        self, script: Any, keys: Sequence[str], args: Sequence[Any], *, write: bool
    ) -> Any:
        """The script's reply, run on a connection taken for it, once the
        Sentinels confirm the node that connection is open to (for a
        ``write``, only if no replica acknowledged it within
        :data:`REPLICA_WAIT_MS`; while one they could promote lacks it, its
        reply waits for a replica, :meth:`_wait_for_a_replica`)."""
        reply, replicas, node = await self._pipeline(script, keys, args, write=write)
        if replicas is not None and replicas >= 1:
            return reply
        verdict = await self._standing(node, write=write)
        if verdict is Standing.NOT_ON_A_REPLICA:
            verdict = await self._wait_for_a_replica(keys[0], node)
        if verdict is Standing.NOT_THE_PRIMARY:
            await self.move()
        if verdict is not Standing.CONFIRMED:
            raise unconfirmed(verdict, node, self._service)
        return reply

    async def _wait_for_a_replica(self, channel: str, node: tuple[str, int]) -> Standing:
        """Until a replica has every write ``node`` has taken so far, or
        :data:`CATCH_UP` seconds: each round a write after ours (``PUBLISH``
        on ``channel``, which nobody hears and every replica gets) and
        ``WAIT`` on its connection, which waits for that write and so for
        ours (asking the write itself again would not: a script that finds
        its work done writes nothing, and ``WAIT`` on a connection that
        wrote nothing, or long ago, answers at once)."""
        backoff = Backoff()
        give_up = anyio.current_time() + CATCH_UP
        while True:
            delay = backoff.next_delay()
            if anyio.current_time() + delay > give_up:
                return Standing.NOT_ON_A_REPLICA
            await anyio.sleep(delay)
            replicas, at = await self._barrier(channel)
            if at != node:  # moved meanwhile: what our write became is not known here
                return Standing.NOT_THE_PRIMARY
            if replicas >= 1:
                return Standing.CONFIRMED
            verdict = await self._standing(node, write=True)
            if verdict is not Standing.NOT_ON_A_REPLICA:
                return verdict

    async def _pipeline(
        self, script: Any, keys: Sequence[str], args: Sequence[Any], *, write: bool
    ) -> tuple[Any, int | None, tuple[str, int]]:
        """The script's reply, then (for a ``write``) ``WAIT 1``'s answer,
        and the node of the connection taken for them."""
        raise NotImplementedError

    async def _barrier(self, channel: str) -> tuple[int, tuple[str, int] | None]:
        """``PUBLISH channel ""`` then ``WAIT 1`` on a connection taken for
        them: the replicas that acknowledged, and its node (``None`` if the
        node is a replica now)."""
        try:
            _, replicas, node = await self._pipeline(self._publish(channel), (), (), write=True)
        except NotThePrimary:
            return 0, None
        return replicas or 0, node

    def _publish(self, channel: str) -> Any:
        """What :meth:`_pipeline` takes for a script, publishing an empty
        message on ``channel`` instead."""
        raise NotImplementedError

    async def move(self) -> None:
        """Drop connections to the old primary: the next asks where to go."""
        raise NotImplementedError

    async def _listen_to(self, sentinel: Any, watch: FailoverWatch) -> None:
        """Hand ``watch`` what one Sentinel announces on ``+switch-master``."""
        raise NotImplementedError

    async def _replicas_of(self, sentinel: Any) -> Sequence[Mapping[str, Any]]:
        replicas: Sequence[Mapping[str, Any]] = await getattr(sentinel, self._replicas_method)(
            self._service
        )
        return replicas

    async def _standing(self, location: tuple[str, int], *, write: bool) -> Standing:
        """What the Sentinels say of ``location`` (for a ``write``, also
        whether they could promote a replica instead)."""
        return await ask_sentinels(
            self._pool.sentinel_manager.sentinels,
            self._service,
            location,
            replicas_of=self._replicas_of if write else None,
            errors=self._errors,
        )

    async def watch_failovers(self, on_failover: Callable[[], None]) -> None:
        """Move, then call ``on_failover``, each time the Sentinels announce
        a new primary; forever."""

        async def switched() -> None:
            await self.move()
            on_failover()

        watch = FailoverWatch(self._service, switched)
        await watch.listen(
            list(self._pool.sentinel_manager.sentinels),
            self._listen_to,
            errors=self._errors,
        )


class PrimaryGuard(Guard):
    """Runs the scripts of a client made by coredis's ``Sentinel.primary_for``."""

    _replicas_method = "sentinel_replicas"

    def __init__(self, client: Any) -> None:
        from coredis.exceptions import RedisError

        super().__init__(client, errors=(RedisError,))

    async def _pipeline(
        self, script: Any, keys: Sequence[str], args: Sequence[Any], *, write: bool
    ) -> tuple[Any, int | None, tuple[str, int]]:
        from coredis.exceptions import ReadOnlyError, ResponseError, UnblockedError

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
                    connection = pipe._connection = await self._pool.get_connection()
                    reply_request = script(keys=keys, args=args, client=pipe)
                    replicas_request = pipe.wait(1, REPLICA_WAIT_MS) if write else None
                reply = await reply_request
                replicas = None if replicas_request is None else await replicas_request
        except (ReadOnlyError, UnblockedError, ResponseError) as exc:
            # READONLY: the node written to is a replica now; UNBLOCKED: the
            # WAIT was cut short as it became one; or WAIT was refused there
            # after a script that wrote nothing. Retried on the primary the
            # Sentinels name (scripts skip what landed).
            if not isinstance(exc, (ReadOnlyError, UnblockedError)) and not is_a_replica_now(exc):
                raise
            self.drop_connections()
            raise not_the_primary(connection.location, self._service) from exc
        return reply, replicas, (connection.location.host, connection.location.port)

    def _publish(self, channel: str) -> Any:
        return lambda keys, args, client: client.publish(channel, "")

    async def move(self) -> None:
        self.drop_connections()

    def drop_connections(self) -> None:
        """Drop every connection (in use too: coredis fails their commands,
        which are retried): the next one asks Sentinel where to go."""
        self._pool.disconnect()
        self._pool.location = None  # known again once a connection is made

    async def _listen_to(self, sentinel: Any, watch: FailoverWatch) -> None:
        async with sentinel.pubsub(channels=[SWITCH_MASTER]) as pubsub:
            async for message in pubsub:
                if message["type"] == "message":
                    await watch.announced(message["data"])


class FailoverWatch:
    """Calls ``on_switch`` once for each new primary the Sentinels announce
    for ``service``.

    Every Sentinel is listened to at once (each announces the switch it
    learns of; one may be down or unreachable, a failover needs only a
    majority), and the same new primary announced by several counts once.
    """

    def __init__(self, service: str, on_switch: Callable[[], Awaitable[None]]) -> None:
        self._service = service
        self._on_switch = on_switch
        self._primary: list[str] | None = None  # the last announced

    async def announced(self, data: bytes | str) -> None:
        """Take one ``+switch-master`` message's data."""
        text = data.decode() if isinstance(data, bytes) else data
        name, *addresses = text.split()
        if name != self._service or len(addresses) != 4 or addresses[2:] == self._primary:
            return
        self._primary = addresses[2:]  # before awaiting: another announcement waits
        await self._on_switch()

    async def listen(
        self,
        sentinels: Sequence[Any],
        listen_to: Callable[[Any, FailoverWatch], Awaitable[None]],
        *,
        errors: tuple[type[BaseException], ...],
    ) -> None:
        """Run ``listen_to(sentinel, self)`` for every Sentinel, each again
        :data:`LISTEN_RETRY` seconds after it fails with one of ``errors``
        (its client library's, the network's); forever."""
        async with anyio.create_task_group() as task_group:
            for sentinel in sentinels:
                task_group.start_soon(self._keep_listening, sentinel, listen_to, errors)

    async def _keep_listening(
        self,
        sentinel: Any,
        listen_to: Callable[[Any, FailoverWatch], Awaitable[None]],
        errors: tuple[type[BaseException], ...],
    ) -> None:
        while True:
            try:
                await listen_to(sentinel, self)
            except errors as exc:  # that Sentinel is down or unreachable: the others listen
                logger.info("listening to Sentinel %r failed: %s", sentinel, exc)
            await anyio.sleep(LISTEN_RETRY)
