"""A stand-in for ``openai.AsyncOpenAI`` with the same streaming shape, so the
guides run without a network or an API key. Replace ``FakeOpenAI()`` with
``openai.AsyncOpenAI()`` in a real app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import anyio


@dataclass
class Delta:
    content: str | None


@dataclass
class Choice:
    delta: Delta


@dataclass
class Chunk:
    choices: list[Choice]


class _Completions:
    def __init__(self, pace: float) -> None:
        self._pace = pace

    async def create(self, *, model: str, messages: list[dict[str, Any]], stream: bool) -> Any:
        prompt = messages[-1]["content"]
        return self._tokens(f"You said: {prompt}. Here is a reply, one token at a time.")

    async def _tokens(self, text: str) -> AsyncIterator[Chunk]:
        for word in text.split(" "):
            await anyio.sleep(self._pace)
            yield Chunk([Choice(Delta(word + " "))])


class _Chat:
    def __init__(self, pace: float) -> None:
        self.completions = _Completions(pace)


class FakeOpenAI:
    def __init__(self, pace: float = 0.01) -> None:
        self.chat = _Chat(pace)
