"""The exception tree. Every exception replayhub raises on purpose derives from
:class:`ReplayHubError`; each subclass is named by what the caller can do about it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class ReplayHubError(Exception):
    """Root of every exception raised by replayhub."""


class InvalidInputError(ReplayHubError, ValueError):
    """An argument was rejected before anything was written.

    Raised for malformed session ids, event names, payloads, metadata, cursors
    and options. It is also a :class:`ValueError`.
    """


class SessionBusyError(ReplayHubError):
    """The session already has a live producer; wait for it to end or cancel it."""


class SessionNotFoundError(ReplayHubError, LookupError):
    """The session does not exist: it was never produced, it expired after its
    retention, or it was removed."""


class LeaseLostError(ReplayHubError):
    """The producer no longer owns its session.

    Its lease expired (the process was paused or cut off from storage for
    longer than ``lease_ttl``), another producer claimed the session, or the
    session was removed. Nothing the stale producer sends is stored.
    """


class BackendUnavailableError(ReplayHubError, ConnectionError):
    """The storage backend could not be reached or failed; the cause is chained."""


class StorageRefusedError(BackendUnavailableError):
    """Storage answered, and refused: it is full (Redis ``OOM``), read-only
    (``READONLY``), the user may not (``NOPERM``), or a key is of another type.

    Retrying does not help, so it is raised at once rather than retried;
    the message is the server's own. A :class:`BackendUnavailableError`.
    """


class EventsLostError(ReplayHubError):
    """Storage lost events of a session (Redis evicted its log, say): what is
    left would read as a log with a gap, so it is not served.

    Raised to readers instead of a truncated replay, and to a producer whose
    log lost its earlier events (it then writes nothing more).
    """


class HubClosedError(ReplayHubError, RuntimeError):
    """The hub is used outside its ``async with`` block."""


@contextmanager
def unwrap_single_exception() -> Iterator[None]:
    """Raise the one exception inside an exception group as itself."""
    try:
        yield
    except BaseExceptionGroup as group:
        leaves: list[BaseException] = []
        pending: list[BaseException] = [group]
        while pending:
            current = pending.pop()
            if isinstance(current, BaseExceptionGroup):
                pending.extend(current.exceptions)
            else:
                leaves.append(current)
        if len(leaves) == 1:
            raise leaves[0]  # noqa: B904 - the group stays as its __context__
        raise
