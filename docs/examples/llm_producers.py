"""The LLM guide's producers: a reply from OpenAI (Chat Completions and
Responses) and from Anthropic, relayed as typed events. The clients are
parameters, so the tests hand in the real SDK clients over a recorded
stream; an app passes ``AsyncOpenAI()`` / ``AsyncAnthropic()``."""

from __future__ import annotations

from anthropic import AsyncAnthropic
from openai import AsyncOpenAI

from replayhub import Hub, llm


# --8<-- [start:openai]
async def answer_with_openai(hub: Hub, client: AsyncOpenAI, chat_id: str, question: str) -> None:
    async with hub.produce(chat_id, metadata={"question": question}) as stream:
        reply = await client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": question}],
            stream=True,
            stream_options={"include_usage": True},  # usage arrives as a last chunk
        )
        message = await llm.relay(stream, reply)
        print(message.text, message.tool_calls, message.usage, message.finish_reason)


# --8<-- [end:openai]


# --8<-- [start:responses]
async def answer_with_responses(hub: Hub, client: AsyncOpenAI, chat_id: str, question: str) -> None:
    async with hub.produce(chat_id) as stream:
        reply = await client.responses.create(model="gpt-4.1-mini", input=question, stream=True)
        await llm.relay(stream, reply)


# --8<-- [end:responses]


# --8<-- [start:anthropic]
async def answer_with_claude(hub: Hub, client: AsyncAnthropic, chat_id: str, question: str) -> None:
    async with hub.produce(chat_id) as stream:
        reply = await client.messages.create(
            model="claude-sonnet-5-5",
            max_tokens=2048,
            messages=[{"role": "user", "content": question}],
            stream=True,
        )
        message = await llm.relay(stream, reply)
        for call in message.tool_calls:
            print(call.id, call.name, call.arguments)  # arguments: parsed JSON


# --8<-- [end:anthropic]
