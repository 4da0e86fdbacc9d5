"""A FastAPI backend for an unmodified AI SDK chat front end (``useChat`` with
``resume: true``), on replayhub: replies survive reloads and dropped
connections, Stop works from any instance, and a new message while a reply
streams takes the chat over.

Run it with ``uvicorn aisdk_app:app`` (``REPLAYHUB_URL=redis://...`` to share
chats between instances). The model here is a deterministic stand-in that
streams typed events (reasoning, text, a tool call and its result, usage);
in a real app the producer is ``await llm.relay(stream, reply)`` around the
OpenAI or Anthropic SDK.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI, HTTPException, Request, Response

from replayhub import Hub, Producer, ProducerGroup, SessionNotFoundError, llm
from replayhub.aisdk import ui_message_stream_response

PACE = float(os.environ.get("AISDK_APP_PACE", "0.05"))  # seconds per token

# --8<-- [start:setup]
hub = Hub.from_url(os.environ.get("REPLAYHUB_URL", "memory://"), namespace="chat")
producers = ProducerGroup(hub)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with hub, producers:
        yield


app = FastAPI(lifespan=lifespan)


def check_owner(request: Request, chat_id: str) -> None:
    """replayhub serves whatever session id it is given: the app decides who
    may read, resume or stop a chat (a session cookie, a user id in the chat
    id, a lookup in your database)."""
    if request.headers.get("x-user") == "intruder":  # stands in for a real check
        raise HTTPException(status_code=404)


# --8<-- [end:setup]


async def fake_agent(stream: Producer, question: str) -> None:
    """What ``llm.relay(stream, reply)`` sends for a model that thinks, calls
    a tool, and answers."""
    city = question.rsplit(" ", 1)[-1].strip("?") or "Paris"
    await stream.send(llm.MessageStart(model="fake-agent-1"))
    await stream.send(llm.ContentStart(0, "reasoning"))
    for token in ["The user asks about ", city, ". I should look up the weather."]:
        await stream.send(llm.ReasoningDelta(token))
        await anyio.sleep(PACE)
    await stream.send(llm.ContentEnd(0))
    arguments = json.dumps({"city": city})
    await stream.send(llm.ContentStart(1, "tool-call"))
    await stream.send(llm.ToolCallStart("call-1", "get_weather"))
    for piece in (arguments[:5], arguments[5:]):
        await stream.send(llm.ToolCallDelta("call-1", piece))
        await anyio.sleep(PACE)
    await stream.send(llm.ToolCall("call-1", "get_weather", {"city": city}))
    await stream.send(llm.ContentEnd(1))
    await stream.send(llm.ToolResult("call-1", {"city": city, "temperature_c": 21}))
    await stream.send(llm.ContentStart(2, "text"))
    for word in f"It is 21 degrees in {city} right now, with a light breeze from the west.".split():
        await stream.send(llm.TextDelta(word + " "))
        await anyio.sleep(PACE)
    await stream.send(llm.ContentEnd(2))
    await stream.send(llm.Usage(input_tokens=12, output_tokens=42, reasoning_tokens=9))
    await stream.send(llm.MessageStop("stop"))


# --8<-- [start:routes]
@app.post("/api/chat")
async def chat(request: Request) -> Response:
    body = await request.json()  # what DefaultChatTransport sends: {id, messages, ...}
    chat_id = str(body["id"])
    check_owner(request, chat_id)
    question = " ".join(
        part.get("text", "") for part in body["messages"][-1]["parts"] if part["type"] == "text"
    )

    async def reply(stream: Producer) -> None:
        await fake_agent(stream, question)  # or: await llm.relay(stream, await client...)

    # A new message while the last reply still streams stops that reply
    # (its readers see it end) and starts this one.
    await producers.start(chat_id, reply, takeover=True)
    return await ui_message_stream_response(hub, chat_id, request, serve_finished=True)


@app.get("/api/chat/{chat_id}/stream")
async def resume(chat_id: str, request: Request) -> Response:
    check_owner(request, chat_id)
    # 204 when nothing is streaming; else the whole reply so far, then live.
    return await ui_message_stream_response(hub, chat_id, request)


@app.post("/api/chat/{chat_id}/stop")
async def stop(chat_id: str, request: Request) -> Response:
    check_owner(request, chat_id)
    await hub.cancel(chat_id)  # every reader, on every instance, ends with "abort"
    return Response(status_code=204)


# --8<-- [end:routes]


# --8<-- [start:persist]
@app.get("/api/chat/{chat_id}/message")
async def final_message(chat_id: str, request: Request) -> dict[str, object]:
    """The finished reply, to store in the chat history."""
    check_owner(request, chat_id)
    try:
        message = await llm.collect(hub, chat_id)  # waits for a live reply to end
    except SessionNotFoundError:
        raise HTTPException(status_code=404) from None
    assert message.outcome is not None
    return {
        "state": message.outcome.state.value,
        "text": message.text,
        "reasoning": message.reasoning,
        "tool_calls": [
            {"id": c.id, "name": c.name, "input": c.arguments} for c in message.tool_calls
        ],
        "usage": message.usage.to_json() if message.usage else None,
    }


# --8<-- [end:persist]
