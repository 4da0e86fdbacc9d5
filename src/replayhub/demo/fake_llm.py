"""A deterministic stand-in for a language model: tokens at a realistic pace,
as plain text or as a reply in replayhub's typed LLM events."""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator

import anyio

from .. import llm

_WORDS = [
    "resumable",
    "streams",
    "keep",
    "every",
    "token",
    "of",
    "a",
    "reply",
    "in",
    "order",
    "so",
    "a",
    "reader",
    "that",
    "reloads",
    "or",
    "loses",
    "its",
    "network",
    "picks",
    "up",
    "exactly",
    "where",
    "it",
    "was",
    "while",
    "the",
    "producer",
    "goes",
    "on",
    "writing",
    "and",
    "a",
    "stop",
    "from",
    "any",
    "instance",
    "ends",
    "the",
    "generation",
    "for",
    "everyone",
    "who",
    "is",
    "listening",
]


def reply_to(prompt: str, *, words: int = 40) -> str:
    """The full text the fake model answers to ``prompt``: same prompt, same text."""
    seed = int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:8], "big")
    chosen = []
    for i in range(words):
        seed = (seed * 6364136223846793005 + 1442695040888963407) % 2**64
        chosen.append(_WORDS[(seed >> 33) % len(_WORDS)])
        if i == 0:
            chosen[0] = chosen[0].capitalize()
    return " ".join(chosen) + "."


def tokens_of(text: str) -> list[str]:
    """Split text into word-sized tokens that join back to it exactly."""
    return re.findall(r"\S+\s*|\s+", text)


async def generate(prompt: str, *, pace: float = 0.03, words: int = 40) -> AsyncIterator[str]:
    """Yield the reply's tokens, one every ``pace`` seconds."""
    for token in tokens_of(reply_to(prompt, words=words)):
        await anyio.sleep(pace)
        yield token


def reasoning_for(prompt: str) -> str:
    """The short "thinking" the fake model shows before it answers ``prompt``."""
    return f"The user asks {prompt!r}. Keep it short and say what streams guarantee."


async def generate_reply(
    prompt: str, *, pace: float = 0.03, words: int = 40
) -> AsyncIterator[llm.LLMEvent]:
    """A whole reply as typed events: a short reasoning block, the text of
    :func:`reply_to` token by token, then the usage, one token every ``pace``
    seconds."""
    yield llm.MessageStart(message_id=f"fake-{reply_to(prompt, words=3)[:12]}", model="fake-1")
    thinking = tokens_of(reasoning_for(prompt))
    yield llm.ContentStart(0, "reasoning")
    for token in thinking:
        await anyio.sleep(pace)
        yield llm.ReasoningDelta(token)
    yield llm.ContentEnd(0)
    answer = tokens_of(reply_to(prompt, words=words))
    yield llm.ContentStart(1, "text")
    for token in answer:
        await anyio.sleep(pace)
        yield llm.TextDelta(token)
    yield llm.ContentEnd(1)
    yield llm.Usage(
        input_tokens=len(tokens_of(prompt)),
        output_tokens=len(thinking) + len(answer),
        reasoning_tokens=len(thinking),
    )
    yield llm.MessageStop("stop")
