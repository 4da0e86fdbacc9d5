"""replayhub: resumable, cancellable event streams for asyncio and Trio apps."""

from ._error_types import ErrorType as ErrorType
from ._errors import BackendUnavailableError as BackendUnavailableError
from ._errors import EventsLostError as EventsLostError
from ._errors import HubClosedError as HubClosedError
from ._errors import InvalidInputError as InvalidInputError
from ._errors import LeaseLostError as LeaseLostError
from ._errors import ReplayHubError as ReplayHubError
from ._errors import SessionBusyError as SessionBusyError
from ._errors import SessionNotFoundError as SessionNotFoundError
from ._errors import StorageRefusedError as StorageRefusedError
from ._events import Event as Event
from ._events import EventLike as EventLike
from ._events import Outcome as Outcome
from ._events import SessionInfo as SessionInfo
from ._events import State as State
from ._hub import Hub as Hub
from ._hub import HubOptions as HubOptions
from ._producer import Producer as Producer
from ._runner import ProducerGroup as ProducerGroup
from ._settings import Settings as Settings
from ._subscription import EventBatches as EventBatches
from ._subscription import Subscription as Subscription

__all__ = [
    "BackendUnavailableError",
    "ErrorType",
    "Event",
    "EventLike",
    "EventsLostError",
    "EventBatches",
    "Hub",
    "HubClosedError",
    "HubOptions",
    "InvalidInputError",
    "LeaseLostError",
    "Outcome",
    "Producer",
    "ProducerGroup",
    "ReplayHubError",
    "SessionBusyError",
    "SessionInfo",
    "SessionNotFoundError",
    "Settings",
    "StorageRefusedError",
    "State",
    "Subscription",
]

__version__ = "0.1.0.dev0"

# Tracebacks and docs show the public path, not the private module.
for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("replayhub._"):
        _obj.__module__ = "replayhub"
del _name, _obj
