"""A small SSE parser, following the WHATWG event-stream rules, for tests."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass
class Message:
    event: str
    data: str
    id: str | None


def parse(lines: Iterable[str]) -> list[Message]:
    messages: list[Message] = []
    parser = Parser()
    for line in lines:
        message = parser.feed(line)
        if message is not None:
            messages.append(message)
    return messages


class Parser:
    """Feed it lines; it returns a message at each blank line that ends one."""

    def __init__(self) -> None:
        self.event = ""
        self.data: list[str] = []
        self.last_id: str | None = None

    def feed(self, line: str) -> Message | None:
        if line == "":
            if not self.data:
                self.event = ""
                return None
            message = Message(self.event or "message", "\n".join(self.data), self.last_id)
            self.event, self.data = "", []
            return message
        if line.startswith(":"):
            return None
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            self.event = value
        elif field == "data":
            self.data.append(value)
        elif field == "id":
            self.last_id = value
        return None
