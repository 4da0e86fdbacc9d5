"""The Redis backend (coredis 6): for producers and readers in different
processes. Needs the ``redis`` extra: ``pip install replayhub[redis]``."""

from ._backend import RedisBackend as RedisBackend

__all__ = ["RedisBackend"]
