"""The exception tree. Every exception replayhub raises on purpose derives from
:class:`ReplayHubError`; each subclass is named by what the caller can do about it."""

from __future__ import annotations


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


class HubClosedError(ReplayHubError, RuntimeError):
    """The hub is used outside its ``async with`` block."""
