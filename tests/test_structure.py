"""The shape of the package: who may import whom.

Imports are read from the source (every ``import`` statement, those under
``if TYPE_CHECKING:`` and inside functions included), since what is checked
is how the modules depend on each other, not what Python happens to load.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
from collections.abc import Iterator
from pathlib import Path

import pytest

import replayhub
from replayhub import Event
from replayhub._events import build_events

PACKAGE_DIR = Path(replayhub.__file__).parent
#: What a backend may use of the core: the errors, the event types and
#: (within backends) the protocol.
CORE_FOR_BACKENDS = {"replayhub._errors", "replayhub._error_types", "replayhub._events"}


def module_name(path: Path) -> str:
    parts = ["replayhub", *path.relative_to(PACKAGE_DIR).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in PACKAGE_DIR.rglob("*.py")}


def imported_by(name: str) -> Iterator[str]:
    """The package's modules that module ``name`` imports."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                source = f"{base}.{node.module}" if node.module else base
            else:
                source = node.module or ""
            # ``from package import module`` depends on that module.
            targets = [
                f"{source}.{alias.name}" if f"{source}.{alias.name}" in MODULES else source
                for alias in node.names
            ]
        else:
            continue
        for target in targets:
            if target in MODULES and target != name:
                yield target


GRAPH = {name: set(imported_by(name)) for name in MODULES}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_walk_reads_imports_under_type_checking_and_in_functions() -> None:
    # The producer names the runtime only for type checking, and the backends
    # package imports the Redis URL schemes inside a function.
    assert "replayhub._runtime" in GRAPH["replayhub._producer"]
    assert "replayhub.backends.redis._connect" in GRAPH["replayhub.backends"]
    assert "replayhub._hub" in GRAPH["replayhub"]


def test_a_cycle_is_found() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


def test_no_module_of_the_package_imports_one_that_imports_it_back() -> None:
    assert cycles(GRAPH) == []


def test_backends_use_only_the_errors_event_types_and_their_own_modules() -> None:
    reaching_out = {
        name: sorted(
            target
            for target in targets
            if not target.startswith("replayhub.backends") and target not in CORE_FOR_BACKENDS
        )
        for name, targets in GRAPH.items()
        if name.startswith("replayhub.backends")
    }
    assert {name: targets for name, targets in reaching_out.items() if targets} == {}


def test_event_init_sets_every_field() -> None:
    # Event.__init__ is replaced for speed (replayhub._events): a field added
    # to the dataclass and not to that __init__ would silently stay unset.
    names = [field.name for field in dataclasses.fields(Event)]
    assert list(inspect.signature(Event.__init__).parameters)[1:] == names
    values = {name: f"value of {name}" for name in names}
    event = Event(**values)
    assert {name: getattr(event, name) for name in names} == values
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.id = "changed"  # type: ignore[misc]


def test_built_events_equal_the_constructed_ones() -> None:
    # replayhub._events.build_events sets each field across a page of new
    # instances: a field it does not set would be missing from every event
    # of a replay.
    names = [field.name for field in dataclasses.fields(Event)]
    assert names == ["id", "event", "data"], "build_events must set every field"
    built = build_events(["1-1", "1-2"], ["message", "tool"], ["text", {"k": 1}])
    assert built == [Event("1-1", "message", "text"), Event("1-2", "tool", {"k": 1})]
    assert all(type(event) is Event for event in built)
    with pytest.raises(dataclasses.FrozenInstanceError):
        built[0].id = "changed"  # type: ignore[misc]
