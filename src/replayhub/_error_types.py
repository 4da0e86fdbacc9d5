"""What kind of failure ended a session: the categories and the default rules.

A failed session's outcome carries an :class:`ErrorType`, so a front end can
say "rate limited, try again in a minute" rather than print a stack trace
message. The rules below recognise the exceptions of the common LLM SDKs and
HTTP clients by their status codes, error bodies and class names, without
importing any of them.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Callable, Mapping
from typing import TypeAlias

from ._errors import ReplayHubError


class ErrorType(enum.StrEnum):
    """The category of the failure that ended a session."""

    TIMEOUT = "timeout"
    """The provider, or something the producer awaited, took too long."""
    NETWORK = "network"
    """A connection failed or broke: refused, reset, DNS, TLS, a closed stream."""
    RATE_LIMIT = "rate_limit"
    """The provider refused for quota or rate (HTTP 429)."""
    OVERLOADED = "overloaded"
    """The provider is overloaded (HTTP 529, 503, Anthropic's ``overloaded_error``)."""
    API = "api"
    """The provider answered with an error: a bad request, auth, a server error."""
    INTERNAL = "internal"
    """Anything else: a bug in the producer, or storage that failed for good."""


ErrorClassifier: TypeAlias = Callable[[BaseException], "ErrorType | str | None"]
"""A hook that names the category of an exception, or ``None`` to leave it to
the default rules (the ``classify_error`` option of :class:`~replayhub.Hub`)."""

_BY_STATUS = {429: ErrorType.RATE_LIMIT, 503: ErrorType.OVERLOADED, 529: ErrorType.OVERLOADED}
# Error "type"/"code" strings that providers put in error bodies, including
# the ones sent in the middle of a stream (where the HTTP status is 200).
_BY_BODY_TYPE = {
    "overloaded_error": ErrorType.OVERLOADED,
    "overloaded": ErrorType.OVERLOADED,
    "rate_limit_error": ErrorType.RATE_LIMIT,
    "rate_limit_exceeded": ErrorType.RATE_LIMIT,
    "insufficient_quota": ErrorType.RATE_LIMIT,
    "timeout_error": ErrorType.TIMEOUT,
    "timeout": ErrorType.TIMEOUT,
}
# Class names (anywhere in the exception's MRO) of the SDKs' and HTTP
# clients' exceptions, most specific first: openai/anthropic's
# APITimeoutError derives from APIConnectionError, httpx's timeouts from
# TransportError.
_BY_CLASS_NAME = (
    ("RateLimitError", ErrorType.RATE_LIMIT),
    ("OverloadedError", ErrorType.OVERLOADED),
    ("APITimeoutError", ErrorType.TIMEOUT),
    ("TimeoutException", ErrorType.TIMEOUT),
    ("TooSlowError", ErrorType.TIMEOUT),
    ("APIConnectionError", ErrorType.NETWORK),
    ("TransportError", ErrorType.NETWORK),
    ("BrokenResourceError", ErrorType.NETWORK),
    ("ClosedResourceError", ErrorType.NETWORK),
    ("EndOfStream", ErrorType.NETWORK),
    ("APIError", ErrorType.API),
)


def check_error_type(value: object) -> ErrorType:
    """``value`` as an :class:`ErrorType`.

    :raises ValueError: if it names no category.
    """
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return ErrorType(value)
    names = ", ".join(member.value for member in ErrorType)
    raise ValueError(f"error type must be one of {names}, not {value!r}")


def classify_error(exc: BaseException, hook: ErrorClassifier | None = None) -> ErrorType:
    """The category of the exception that ended a producer's block.

    In order: ``hook(exc)`` if it names one; an ``error_type`` attribute on
    the exception (as :class:`replayhub.llm.StreamError` has); the error body
    a provider sent (``{"error": {"type": ...}}``); the HTTP status (429 rate
    limit, 503/529 overloaded, other 4xx/5xx api); :class:`TimeoutError`;
    the SDKs' and HTTP clients' exception classes; :class:`ConnectionError`
    and other :class:`OSError`; else ``internal``. A hook that raises or
    names no category is ignored (the default rules answer).
    """
    if hook is not None:
        # A broken hook must not hide the failure it was asked about.
        with contextlib.suppress(Exception):
            chosen = hook(exc)
            if chosen is not None:
                return check_error_type(chosen)
    declared = getattr(exc, "error_type", None)
    if declared is not None:
        with contextlib.suppress(ValueError):
            return check_error_type(declared)
    from_body = _from_body(getattr(exc, "body", None))
    if from_body is not None:
        return from_body
    status = getattr(exc, "status_code", None)
    if isinstance(status, int) and status >= 400:
        return _BY_STATUS.get(status, ErrorType.API)
    if isinstance(exc, TimeoutError):
        return ErrorType.TIMEOUT
    names = {cls.__name__ for cls in type(exc).__mro__}
    for name, error_type in _BY_CLASS_NAME:
        if name in names:
            return error_type
    if isinstance(exc, ReplayHubError):  # storage failed, the claim was lost: ours
        return ErrorType.INTERNAL
    if isinstance(exc, OSError):  # ConnectionError and the socket errors
        return ErrorType.NETWORK
    return ErrorType.INTERNAL


def _from_body(body: object) -> ErrorType | None:
    """The category an error body names: ``{"type": "error", "error": {"type":
    "overloaded_error", ...}}`` (Anthropic) or ``{"error": {"type": ..., "code":
    ...}}`` and its inner object (OpenAI)."""
    if not isinstance(body, Mapping):
        return None
    inner = body.get("error")
    candidates = [inner] if isinstance(inner, Mapping) else []
    candidates.append(body)
    for mapping in candidates:
        for key in ("type", "code"):
            value = mapping.get(key)
            if isinstance(value, str) and value in _BY_BODY_TYPE:
                return _BY_BODY_TYPE[value]
    return None
