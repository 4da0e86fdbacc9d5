"""The LLM guide's hand-written producer, typed readers and error categories."""

from __future__ import annotations

import contextlib

from replayhub import ErrorType, Hub, State, llm


# --8<-- [start:by_hand]
async def produce_by_hand(hub: Hub, chat_id: str) -> None:
    async with hub.produce(chat_id) as stream:
        await stream.send(llm.MessageStart(message_id="m1", model="my-model"))
        await stream.send(llm.ReasoningDelta("The user wants the weather..."))
        await stream.send(llm.TextDelta("Let me check. "))
        await stream.send(llm.ToolCall(id="c1", name="get_weather", arguments={"city": "Paris"}))
        await stream.send(llm.ToolResult(id="c1", output={"temp_c": 21}))
        await stream.send(llm.TextDelta("It is 21 °C in Paris."))
        await stream.send(llm.Data("sources", ["https://weather.example/paris"]))
        await stream.send(llm.Usage(input_tokens=12, output_tokens=40))
        await stream.send(llm.MessageStop(finish_reason="stop"))


# --8<-- [end:by_hand]


# --8<-- [start:read]
async def print_reply(hub: Hub, chat_id: str, after: str | None = None) -> None:
    async with hub.subscribe(chat_id, after=after) as events:
        async for item in llm.read(events):
            match item:
                case llm.TextDelta(text=text):
                    print(text, end="")
                case llm.ReasoningDelta(text=text):
                    print(f"[thinking] {text}")
                case llm.ToolCall(name=name, arguments=arguments):
                    print(f"[calls {name} with {arguments}]")
                case llm.Usage() as usage:
                    print(f"\n[{usage.total_tokens} tokens]")
                case _:
                    pass  # other typed events, and events outside the vocabulary
    print(f"[{events.outcome.state if events.outcome else '?'}]")


# --8<-- [end:read]


# --8<-- [start:collect]
async def save_reply(hub: Hub, chat_id: str) -> dict[str, object]:
    message = await llm.collect(hub, chat_id)  # follows a live reply to its end
    assert message.outcome is not None
    return {
        "id": message.message_id,
        "text": message.text,
        "reasoning": message.reasoning,
        "tool_calls": [(call.id, call.name, call.arguments) for call in message.tool_calls],
        "usage": message.usage.to_json() if message.usage else None,
        "state": message.outcome.state.value,
    }


# --8<-- [end:collect]


# --8<-- [start:errors]
class QuotaExhausted(Exception):
    """Raised by some provider client the default rules do not know."""


def categorise(exc: BaseException) -> ErrorType | None:
    if isinstance(exc, QuotaExhausted):
        return ErrorType.RATE_LIMIT
    return None  # the default rules decide


async def failing_reply(hub: Hub, chat_id: str) -> None:
    async with hub.produce(chat_id) as stream:
        await stream.send(llm.TextDelta("Partial answer"))
        raise QuotaExhausted("monthly quota used up")


async def explain_failure(hub: Hub, chat_id: str) -> str:
    info = await hub.info(chat_id)
    if info is None or info.state is not State.FAILED:
        return "no failure"
    if info.error_type is ErrorType.RATE_LIMIT:
        return "The model is busy: try again in a minute."
    return f"The reply failed ({info.error_type}): {info.error}"


async def main() -> None:
    async with Hub(classify_error=categorise) as hub:
        with contextlib.suppress(QuotaExhausted):  # stored as failed, with its category
            await failing_reply(hub, "chat:7")
        print(await explain_failure(hub, "chat:7"))
        # Or with a category of your own, no hook needed:
        # raise llm.StreamError("quota used up", type="rate_limit") from exc


# --8<-- [end:errors]
