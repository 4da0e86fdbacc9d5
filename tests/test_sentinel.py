"""A primary/replica pair under Sentinel: sessions through ``redis+sentinel://``,
and a failover (ordered, then a killed primary) while a session streams."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from replayhub import Hub, State

from .redis_server import SentinelSet
from .streaming import Stream, stream_with_subscribers

pytestmark = pytest.mark.slow


@pytest.fixture
def sentinels(tmp_path: Path) -> Iterator[SentinelSet]:
    servers = SentinelSet(tmp_path / "sentinel").start()
    yield servers
    servers.stop()


def hub_on(servers: SentinelSet) -> Hub:
    # A long lease: the old primary takes renewals until Sentinel demotes
    # it (seconds after the promotion), and those are lost with it.
    return Hub.from_url(servers.url, namespace="s", lease_ttl=30.0, retention=60.0)


async def test_ordered_failover_mid_stream_leaves_subscribers_complete(
    sentinels: SentinelSet,
) -> None:
    async def fail_over(stream: Stream) -> None:
        await stream.sent_at_least(300)
        async with stream.paused():
            # Replication is asynchronous: an ordered failover does not wait
            # for the replica, so the test does (docs/deployment.md).
            await anyio.to_thread.run_sync(sentinels.primary.wait_replicated_by, sentinels.replica)
            await anyio.to_thread.run_sync(
                sentinels.sentinels[0].command, "sentinel", "failover", sentinels.service
            )
            # Until the old primary is a replica: writes it takes before
            # Sentinel demotes it are lost with its data (docs/deployment.md).
            await anyio.to_thread.run_sync(
                sentinels.wait,
                lambda: (
                    sentinels.primary_port() == sentinels.replica.port
                    and b"role:slave" in sentinels.primary.command("info", "replication")
                ),
            )

    async with hub_on(sentinels) as hub, hub_on(sentinels) as reader:
        result = await stream_with_subscribers(hub, reader, "chat", count=1500, during=fail_over)
    result.assert_complete(State.DONE)
    # The session lives on the primary the Sentinels name now.
    assert sentinels.replica.command("exists", "s:{chat}:s").strip() == b"1"


async def test_killed_primary_mid_stream_fails_over_to_the_replica(
    sentinels: SentinelSet,
) -> None:
    async def kill_primary(stream: Stream) -> None:
        await stream.sent_at_least(300)
        async with stream.paused():
            await anyio.to_thread.run_sync(sentinels.primary.wait_replicated_by, sentinels.replica)
            sentinels.primary.kill()
            await anyio.to_thread.run_sync(
                sentinels.wait, lambda: sentinels.primary_port() == sentinels.replica.port
            )

    async with hub_on(sentinels) as hub, hub_on(sentinels) as reader:
        result = await stream_with_subscribers(hub, reader, "chat", count=1500, during=kill_primary)
    result.assert_complete(State.DONE)
