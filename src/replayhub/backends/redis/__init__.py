"""The Redis backend: for producers and readers in different processes.
Needs a Redis client library: ``pip install replayhub[redis]`` (redis-py,
asyncio) or ``replayhub[coredis]`` (coredis 6, asyncio and Trio)."""

from ._backend import RedisBackend as RedisBackend

__all__ = ["RedisBackend"]
