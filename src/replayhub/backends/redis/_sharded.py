"""coredis's sharded Pub/Sub with its shard connections given back.

coredis 6.9's ``ShardedPubSub.run`` acquires one pooled connection per
primary through an ``AsyncExitStack`` that it never closes: every reconnect
leaks those pool leases (and, under Trio, their unfinished async generators
are collected with a ``ResourceWarning``). This subclass is the same loop
with the stack closed on every exit, and a cleanup that cannot fail the close.
"""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack
from typing import Any

import anyio
from anyio.abc import TaskStatus
from coredis.patterns.pubsub import ShardedPubSub

logger = logging.getLogger(__name__)


class ClosingShardedPubSub(ShardedPubSub[Any]):
    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        started = False

        async def run_once() -> None:
            nonlocal started
            async with AsyncExitStack() as stack:
                pool = self.connection_pool
                nodes = (
                    pool.cluster_layout.replicas
                    if self._read_from_replicas
                    else pool.cluster_layout.primaries
                )
                self.shard_connections = {}
                for node in nodes:
                    if node.node_id:
                        self.shard_connections[node.node_id] = await stack.enter_async_context(
                            pool.acquire(node=node)
                        )
                try:
                    async with anyio.create_task_group() as task_group:
                        self._current_scope = task_group.cancel_scope
                        for connection in self.shard_connections.values():
                            task_group.start_soon(self._consume_shard_push_messages, connection)
                            task_group.start_soon(self._shard_keepalive, connection)
                        if not started:
                            task_status.started()
                            started = True
                        elif self.channels:  # resubscribe
                            await self.subscribe(*self.channels.keys())
                finally:
                    if self._current_scope.cancel_called:
                        with anyio.CancelScope(shield=True):
                            await self._cleanup_quietly()

        await self._retry_policy.call_with_retries(run_once)

    async def _cleanup_quietly(self) -> None:
        """Unsubscribe on the way out, if the shards can still be told.

        On a layout gone stale (a failover) coredis cannot route the
        unsubscribe and raises; the connections close anyway.
        """
        try:
            await self._cleanup()
        except Exception as exc:
            logger.debug("sharded Pub/Sub cleanup failed: %s", exc)
