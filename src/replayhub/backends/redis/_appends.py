"""Write batches of many sessions gathered into one script call.

A process serving a thousand live sessions at 50 tokens a second each makes
50,000 appends a second; as single commands, the client's per-command cost
alone (tens of µs in coredis) takes more than a core. Appends wait here
instead; one task sends whatever has gathered while the previous call was
out as one ``append_many`` call, and each caller gets its own session's
reply. At low load a call carries one append and costs one loop pass more.

Not on a Redis Cluster, where sessions live in different slots.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio

from ..._errors import BackendUnavailableError, HubClosedError
from ._keys import SessionKeys

#: Appends per call at most: the call blocks Redis while it runs.
MAX_PER_CALL = 128

RunMany = Callable[[list[str], list[str | bytes | int]], Awaitable[list[Any]]]


class _Append:
    __slots__ = ("args", "done", "error", "keys", "reply")

    def __init__(self, keys: SessionKeys, args: Sequence[str | bytes | int]) -> None:
        self.keys = keys
        self.args = args
        self.done = anyio.Event()
        self.reply: list[Any] = []
        self.error: Exception | None = None


class AppendQueue:
    """
    :param run_many: runs ``append_many`` with its keys and arguments;
        raises :class:`BackendUnavailableError` if the call fails.
    """

    def __init__(self, run_many: RunMany) -> None:
        self._run_many = run_many
        self._waiting: list[_Append] = []
        self._sending: list[_Append] = []
        self._arrived = anyio.Event()
        self._closed = False

    async def append(self, keys: SessionKeys, args: Sequence[str | bytes | int]) -> list[Any]:
        """The session's ``append.lua`` reply, from a shared call.

        Cancelled, the append may still be made: as with any command whose
        reply never came, the caller retries the same batch.
        """
        if self._closed:
            raise HubClosedError("the Redis backend is not open")
        request = _Append(keys, args)
        self._waiting.append(request)
        self._arrived.set()
        await request.done.wait()
        if request.error is not None:
            # Raised anew in this caller's task, of the same class (a refusal
            # stays a refusal).
            error_class = (
                type(request.error)
                if isinstance(request.error, BackendUnavailableError)
                else BackendUnavailableError
            )
            raise error_class(str(request.error)) from request.error
        return request.reply

    async def run(self) -> None:
        """Send what gathers, one call at a time, until cancelled."""
        try:
            while True:
                await self._arrived.wait()
                self._arrived = anyio.Event()
                while self._waiting:
                    self._sending = self._waiting[:MAX_PER_CALL]
                    del self._waiting[:MAX_PER_CALL]
                    await self._send(self._sending)
        finally:
            self._closed = True
            closed = BackendUnavailableError("the Redis backend closed before the append")
            for request in self._sending + self._waiting:
                if not request.done.is_set():
                    request.error = closed
                    request.done.set()

    async def _send(self, taken: list[_Append]) -> None:
        keys: list[str] = []
        args: list[str | bytes | int] = []
        for request in taken:
            keys += (request.keys.session, request.keys.log)
            args += request.args
        keys.append(taken[0].keys.index)
        try:
            replies = await self._run_many(keys, args)
        except Exception as exc:  # each caller raises it as its own
            for request in taken:
                request.error = exc
                request.done.set()
            return
        for request, reply in zip(taken, replies, strict=True):
            request.reply = reply
            request.done.set()
