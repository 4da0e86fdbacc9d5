"""The real OpenAI and Anthropic SDK clients, driven offline: an
``httpx2.MockTransport`` answers every request with a recorded SSE body from
``tests/samples/``, in small pieces, and records whether the client closed
the response."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anthropic
import anyio
import httpx2
import openai

SAMPLES = Path(__file__).parent / "samples"


class RecordedBody(httpx2.AsyncByteStream):
    """A response body sent in ``piece``-byte pieces. With ``stall_after``,
    it sends that many bytes and then waits until closed, like a provider
    in the middle of a long reply."""

    def __init__(self, data: bytes, *, piece: int = 64, stall_after: int | None = None) -> None:
        self.data = data
        self.piece = piece
        self.stall_after = stall_after
        self.sent = 0
        self.closed = anyio.Event()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        limit = len(self.data) if self.stall_after is None else self.stall_after
        while self.sent < limit:
            chunk = self.data[self.sent : min(self.sent + self.piece, limit)]
            self.sent += len(chunk)
            yield chunk
            await anyio.lowlevel.checkpoint()
        if self.stall_after is not None:
            await self.closed.wait()

    async def aclose(self) -> None:
        self.closed.set()


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def _http_client(body: RecordedBody) -> httpx2.AsyncClient:
    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, stream=body)

    return httpx2.AsyncClient(transport=httpx2.MockTransport(handler))


def openai_client(body: RecordedBody) -> openai.AsyncOpenAI:
    """Offline: a fake key, a base URL nothing listens on, no retries."""
    url, client = "http://provider.test/v1", _http_client(body)
    return openai.AsyncOpenAI(api_key="sk-test", base_url=url, max_retries=0, http_client=client)


def anthropic_client(body: RecordedBody) -> anthropic.AsyncAnthropic:
    """Offline, as :func:`openai_client`."""
    url, client = "http://provider.test", _http_client(body)
    return anthropic.AsyncAnthropic(
        api_key="sk-test", base_url=url, max_retries=0, http_client=client
    )
