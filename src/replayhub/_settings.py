"""Hub options and the validation of everything a caller hands in.

Every check here runs before anything is queued or written, so rejected input
never reaches storage.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

from ._error_types import ErrorClassifier
from ._errors import InvalidInputError
from ._events import DataKind, Metadata

MAX_SESSION_ID_LENGTH = 256
MAX_EVENT_NAME_LENGTH = 64
RESERVED_EVENT_PREFIX = "replayhub."
_NAMESPACE = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """The hub's options, validated; pass them to :class:`~replayhub.Hub` as keywords.

    :raises ~replayhub.InvalidInputError: if an option is out of range.
    """

    namespace: str = "replayhub"
    """Keeps this application's sessions apart from others on the same
    storage: 1 to 64 of ``A-Za-z0-9_.-``."""
    lease_ttl: float = 10.0
    """Seconds a producer's claim lasts without renewal. A crashed producer's
    session turns ``abandoned`` this long after its last heartbeat; heartbeats
    run every ``lease_ttl / 3``."""
    retention: float = 600.0
    """Seconds a finished session, with its events, stays readable."""
    max_event_bytes: int = 1024 * 1024
    """Largest encoded payload of one event."""
    max_events: int = 100_000
    """Most events one generation of a session may hold; the next ``send``
    raises instead of dropping old events."""
    max_metadata_bytes: int = 64 * 1024
    """Largest encoded metadata object."""
    buffer_size: int = 1024
    """Events a producer queues before ``send`` waits for storage."""
    finalize_timeout: float = 5.0
    """Seconds the flush and terminal write of a producer may take."""
    classify_error: ErrorClassifier | None = None
    """Names the :class:`~replayhub.ErrorType` of the exception that failed a
    producer's block, or returns ``None`` to leave it to the default rules
    (status codes, error bodies and the exception classes of the common LLM
    SDKs and HTTP clients). For providers those rules do not know."""

    def __post_init__(self) -> None:
        if not isinstance(self.namespace, str) or not _NAMESPACE.fullmatch(self.namespace):
            raise InvalidInputError(
                "namespace must be 1-64 characters of letters, digits, '_', '.', '-'"
            )
        for name in ("lease_ttl", "finalize_timeout"):
            _require_seconds(name, getattr(self, name), minimum=0.05)
        _require_seconds("retention", self.retention, minimum=0.0)
        for name in ("max_event_bytes", "max_events", "max_metadata_bytes", "buffer_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InvalidInputError(f"{name} must be a positive int, not {value!r}")
        if self.classify_error is not None and not callable(self.classify_error):
            raise InvalidInputError(
                f"classify_error must be callable, not {type(self.classify_error).__name__}"
            )

    @property
    def heartbeat_interval(self) -> float:
        """Renew three times per lease, so one lost renewal never loses the claim."""
        return self.lease_ttl / 3


def _require_seconds(name: str, value: object, *, minimum: float) -> None:
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value < minimum
    ):
        raise InvalidInputError(f"{name} must be a number of seconds >= {minimum}, not {value!r}")


def check_session_id(session_id: object) -> str:
    """Return ``session_id`` if usable.

    A session id is a :class:`str` of 1 to 256 characters, encodable as UTF-8,
    with no control characters. Any other character is allowed (``:``, ``{``,
    ``*``, spaces, non-ASCII); backends escape what they need to.

    :raises ~replayhub.InvalidInputError: otherwise.
    """
    if not isinstance(session_id, str):
        raise InvalidInputError(f"session id must be a str, not {type(session_id).__name__}")
    if not 0 < len(session_id) <= MAX_SESSION_ID_LENGTH:
        raise InvalidInputError(
            f"session id must be 1 to {MAX_SESSION_ID_LENGTH} characters, got {len(session_id)}"
        )
    if not session_id.isprintable() and any(_is_control(c) for c in session_id):
        raise InvalidInputError(f"session id {session_id!r} contains a control character")
    _require_utf8(session_id, "session id")
    return session_id


def check_event_name(event: object) -> str:
    """Return ``event`` if usable as an event name.

    A name is 1 to 64 printable characters (no newline, so it is safe in an
    SSE ``event:`` line) and does not start with ``replayhub.``, which is kept
    for the library's own events.
    """
    if not isinstance(event, str):
        raise InvalidInputError(f"event name must be a str, not {type(event).__name__}")
    if not 0 < len(event) <= MAX_EVENT_NAME_LENGTH or not event.isprintable():
        raise InvalidInputError(
            f"event name must be 1 to {MAX_EVENT_NAME_LENGTH} printable characters, "
            f"got {event!r:.80}"
        )
    if event.startswith(RESERVED_EVENT_PREFIX):
        raise InvalidInputError(f"event names starting with {RESERVED_EVENT_PREFIX!r} are reserved")
    _require_utf8(event, "event name")
    return event


def encode_data(data: object, *, max_bytes: int) -> tuple[DataKind, str | bytes]:
    """Encode a payload for storage, checking its type and size.

    :raises ~replayhub.InvalidInputError: if ``data`` is not str, bytes or a
        JSON value, or if its encoding is larger than ``max_bytes``.
    """
    kind: DataKind
    payload: str | bytes
    if isinstance(data, str):
        kind, payload = DataKind.TEXT, data
        # ASCII text is its own UTF-8; other text is encoded once, to reject
        # lone surrogates and to measure it.
        size = len(data) if data.isascii() else len(_require_utf8(data, "data"))
    elif isinstance(data, bytes | bytearray | memoryview):
        kind, payload = DataKind.BYTES, bytes(data)
        size = len(payload)
    else:
        kind, payload = DataKind.JSON, dump_json(data, what="data")
        size = len(payload.encode())
    if size > max_bytes:
        raise InvalidInputError(f"event data is {size} bytes, over max_event_bytes={max_bytes}")
    return kind, payload


def check_metadata(metadata: object, *, max_bytes: int) -> Metadata:
    """Return a private copy of ``metadata`` if it is a JSON object within limits."""
    if not isinstance(metadata, Mapping):
        raise InvalidInputError(f"metadata must be a mapping, not {type(metadata).__name__}")
    if not all(isinstance(key, str) for key in metadata):
        raise InvalidInputError("metadata keys must be str")
    text = dump_json(dict(metadata), what="metadata")
    if len(text.encode()) > max_bytes:
        raise InvalidInputError(f"metadata is over max_metadata_bytes={max_bytes}")
    copy: Metadata = json.loads(text)
    return copy


def dump_json(value: object, *, what: str) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidInputError(f"{what} is not serialisable as JSON: {exc}") from exc


def _is_control(char: str) -> bool:
    code = ord(char)
    return code < 0x20 or 0x7F <= code < 0xA0


def _require_utf8(text: str, what: str) -> bytes:
    try:
        return text.encode()
    except UnicodeEncodeError as exc:
        raise InvalidInputError(f"{what} is not encodable as UTF-8: {exc.reason}") from exc
