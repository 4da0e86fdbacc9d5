"""coredis connection pools that never lose a slot.

coredis 6.9 pools hold ``max_connections`` slots, and lose one

- when a connection dies while checked out: ``release()`` drops it with its
  slot (a Pub/Sub connection always is checked out; CLIENT KILL and
  failovers do this), and
- when ``get_connection()`` is cancelled while it connects (the slot is
  taken, the connection never handed out).

After enough of either the pool is empty and every command waits forever
(MEASUREMENTS.md saw it for cancelled blocking commands). These subclasses
give the slot back in both cases, so a hub can keep a small, fixed pool.
The two methods follow coredis 6.9's own, with the slot returned.
"""

from __future__ import annotations

from contextlib import suppress
from typing import Any

from anyio import fail_after
from coredis._concurrency import QueueFull
from coredis.connection import TCPLocation
from coredis.pool import ClusterConnectionPool, ConnectionPool
from coredis.pool._sentinel import SentinelConnectionPool


def _return_slot(queue: Any) -> None:
    with suppress(QueueFull):
        queue.append_nowait(None)  # an empty slot: the next get() connects anew


class _KeepsSlots:
    """For ``ConnectionPool`` and its Sentinel subclass."""

    _available_connections: Any
    _online_connections: set[Any]
    statistics: Any
    task_group: Any
    timeout: float | None
    _construct_connection: Any  # annotations only: the pool's own methods run

    async def get_connection(self, **_: Any) -> Any:
        with fail_after(self.timeout):
            connection = await self._available_connections.get()
        if connection is None or not connection.reusable:
            if connection is not None:
                connection.invalidate()
            try:
                connection = await self._connect()
            except BaseException:
                _return_slot(self._available_connections)
                raise
            self.statistics.connection_created(connection)
            self._online_connections.add(connection)
        self.statistics.connection_leased(connection)
        return connection

    async def _connect(self) -> Any:
        connection = await self._construct_connection()
        wrap = self._ConnectionPool__wrap_connection  # type: ignore[attr-defined]
        if error := await self.task_group.start(wrap, connection):
            raise error
        return connection

    def release(self, connection: Any) -> None:
        super().release(connection)  # type: ignore[misc]
        if not connection.usable:
            _return_slot(self._available_connections)


class SlotReturningPool(_KeepsSlots, ConnectionPool[Any]):
    pass


class SlotReturningSentinelPool(_KeepsSlots, SentinelConnectionPool):
    pass


class SlotReturningClusterPool(ClusterConnectionPool):
    async def _get_connection_by_node(self, node: Any) -> Any:
        queue = self._node_pool(TCPLocation(node.host, node.port))
        with fail_after(self.timeout):
            connection = await queue.get()
        if not connection or not connection.reusable:
            if connection:
                connection.invalidate()
            try:
                connection = await self._make_node_connection(node)
            except BaseException:  # coredis catches Exception only: not cancellation
                _return_slot(queue)
                raise
        return connection

    def release(self, connection: Any) -> None:
        super().release(connection)
        if not connection.usable:
            _return_slot(self._node_pool(connection.location))
