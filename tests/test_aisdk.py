"""The AI SDK's UI message stream: the part mapping and the resume answers
in process, then the `ai` package's own client (under Node) against the docs'
example app on uvicorn, on Hypercorn/trio, and on two instances sharing Redis
(the resume lands on the other one)."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from replayhub import ErrorType, Event, Hub, llm
from replayhub.aisdk import HEADERS, UIMessageEncoder, encode_part, ui_message_stream_response

from .conftest import HubFactory
from .demo_server import example_app_server
from .redis_server import RedisServer

JS = Path(__file__).parent / "js"


def app_for(hub: Hub) -> Starlette:
    async def resume(request: Request) -> Response:
        serve_finished = request.query_params.get("all") == "1"
        return await ui_message_stream_response(
            hub, request.path_params["chat_id"], request, serve_finished=serve_finished
        )

    return Starlette(routes=[Route("/api/chat/{chat_id}/stream", resume)])


async def parts_of(hub: Hub, chat_id: str, *, serve_finished: bool = True) -> tuple[int, list[Any]]:
    transport = httpx.ASGITransport(app=app_for(hub))
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        query = "?all=1" if serve_finished else ""
        response = await client.get(f"/api/chat/{chat_id}/stream{query}")
    if response.status_code != 200:
        return response.status_code, []
    assert response.headers["content-type"].startswith("text/event-stream")
    for name, value in HEADERS.items():
        assert response.headers[name] == value
    lines = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return response.status_code, [json.loads(line) for line in lines[:-1]]


@pytest.mark.parametrize("backend_kind", ["memory"])
async def test_typed_events_become_ui_parts_each_after_its_opening_part(
    make_hub: HubFactory,
) -> None:
    async with make_hub() as hub:
        async with hub.produce("c1") as stream:
            await stream.send("Hel", event="text-delta")  # a plain producer's text
            await stream.send(llm.TextDelta("lo"))
            await stream.send(llm.ReasoningDelta("hmm"))
            await stream.send(llm.ToolCallDelta("x", "{"))  # no start seen: dropped
            await stream.send(llm.ToolCallStart("c", "f"))
            await stream.send(llm.ToolCallDelta("c", '{"a":1}'))
            await stream.send(llm.ToolCall("c", "f", {"a": 1}))
            await stream.send(llm.ToolResult("c", "boom", is_error=True))
            await stream.send(llm.Usage(1, 2))
            await stream.send(llm.Data("sources", ["s"], id="d1"))
            await stream.send({"k": 1}, event="custom")
            await stream.send(llm.Error("tool failed", ErrorType.API))
            await stream.send(llm.MessageStop("tool-calls"))
        status, parts = await parts_of(hub, "c1")
        info = await hub.info("c1")
    assert status == 200
    assert info is not None
    assert parts == [
        {"type": "start", "messageId": f"c1:{info.generation}"},
        {"type": "start-step"},
        {"type": "text-start", "id": "text-1"},
        {"type": "text-delta", "id": "text-1", "delta": "Hel"},
        {"type": "text-delta", "id": "text-1", "delta": "lo"},
        {"type": "text-end", "id": "text-1"},
        {"type": "reasoning-start", "id": "reasoning-2"},
        {"type": "reasoning-delta", "id": "reasoning-2", "delta": "hmm"},
        {"type": "reasoning-end", "id": "reasoning-2"},
        {"type": "tool-input-start", "toolCallId": "c", "toolName": "f"},
        {"type": "tool-input-delta", "toolCallId": "c", "inputTextDelta": '{"a":1}'},
        {"type": "tool-input-available", "toolCallId": "c", "toolName": "f", "input": {"a": 1}},
        {"type": "tool-output-error", "toolCallId": "c", "errorText": "boom"},
        {
            "type": "message-metadata",
            "messageMetadata": {"usage": {"inputTokens": 1, "outputTokens": 2, "totalTokens": 3}},
        },
        {"type": "data-sources", "data": ["s"], "id": "d1"},
        {"type": "data-custom", "data": {"k": 1}},
        {"type": "data-error", "data": {"type": "api", "message": "tool failed"}},
        {"type": "finish-step"},
        {"type": "finish", "finishReason": "tool-calls"},
    ]


@pytest.mark.parametrize("backend_kind", ["memory", "redis"])
async def test_a_reply_ends_with_error_or_abort_and_resume_answers_204_when_nothing_streams(
    make_hub: HubFactory,
) -> None:
    async with make_hub(lease_ttl=0.5) as hub:
        with pytest.raises(llm.StreamError):
            async with hub.produce("failed") as stream:
                await stream.send(llm.MessageStart("m-1", "model-x"))
                await stream.send(llm.TextDelta("part"))
                raise llm.StreamError("slow down", type="rate_limit")
        async with hub.produce("cancelled") as stream:
            await stream.send(llm.TextDelta("half"))
            await hub.cancel("cancelled")
            await stream.flush()
            while True:
                await stream.send(llm.TextDelta("."))
        record = await hub._backend.claim("crashed", metadata={}, lease_ttl=0.3, retention=60)
        assert record.generation
        failed = await parts_of(hub, "failed")
        cancelled = await parts_of(hub, "cancelled")
        abandoned = await parts_of(hub, "crashed")  # found abandoned once its lease ran out
        nothing = await parts_of(hub, "failed", serve_finished=False)
        unknown = await parts_of(hub, "nobody")
    assert failed[1][0] == {
        "type": "start",
        "messageId": "m-1",
        "messageMetadata": {"model": "model-x"},
    }
    assert failed[1][-1] == {"type": "error", "errorText": "rate_limit: StreamError: slow down"}
    assert cancelled[1][-1] == {"type": "abort", "reason": "cancelled"}
    assert abandoned[1][-1] == {"type": "abort", "reason": "abandoned"}
    assert [part["type"] for part in abandoned[1]] == ["start", "abort"]
    assert nothing == (204, [])  # a finished reply: nothing to resume
    assert unknown == (204, [])


# -- the real client --------------------------------------------------------


@pytest.fixture(scope="module")
def node() -> str:
    found = shutil.which("node")
    if found is None or not (JS / "node_modules" / "ai").is_dir():
        pytest.fail("node and tests/js/node_modules are needed; scripts/check installs them")
    return found


@pytest.fixture(scope="module", params=["uvicorn", "two-instances-on-redis"])
def bases(request: pytest.FixtureRequest) -> Iterator[list[str]]:
    """The example app's URLs: one instance (memory, uvicorn), or two sharing
    Redis for the client to move between: one on uvicorn/asyncio, the other
    on Hypercorn/trio (every flow crosses from one to the other)."""
    # Slow enough that the client drops, stops or takes over mid-reply: a
    # reply lasts about 4 s, and a client on a cold server was seen to take
    # 1.5 s from its request to its resume.
    env = {"AISDK_APP_PACE": "0.2"}
    with ExitStack() as stack:
        if request.param == "two-instances-on-redis":
            redis: RedisServer = request.getfixturevalue("redis_server")
            env["REPLAYHUB_URL"] = redis.url
            servers = [
                stack.enter_context(example_app_server("aisdk_app:app", loop, env))
                for loop in ("asyncio", "trio")
            ]
        else:
            servers = [stack.enter_context(example_app_server("aisdk_app:app", "asyncio", env))]
        yield [server.base for server in servers]


def run_client(node: str, scenario: str, bases: list[str]) -> dict[str, Any]:
    result = subprocess.run(
        [node, "chat.mjs", scenario, *bases], cwd=JS, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    assert report["invalid"] == []  # every part passes the package's own schema
    for chat in report["chats"]:
        assert chat["errors"] == []
        assert chat["status"] == "ready"
    return report


def reply_parts(message: dict[str, Any]) -> list[tuple[str, Any]]:
    return [(part["type"], part.get("text", part.get("output"))) for part in message["parts"]]


def expected_reply(city: str) -> list[tuple[str, Any]]:
    return [
        ("step-start", None),
        ("reasoning", f"The user asks about {city}. I should look up the weather."),
        ("tool-get_weather", {"city": city, "temperature_c": 21}),
        ("text", f"It is 21 degrees in {city} right now, with a light breeze from the west. "),
    ]


def test_the_ai_sdk_client_resumes_a_dropped_reply_whole(node: str, bases: list[str]) -> None:
    report = run_client(node, "drop-and-resume", bases)
    [chat] = report["chats"]
    user, assistant = chat["messages"]
    assert user["role"] == "user"
    assert assistant["role"] == "assistant"
    assert reply_parts(assistant) == expected_reply("Lyon")  # no duplicated text
    written = "".join(
        str(text) for kind, text in expected_reply("Lyon") if kind != "tool-get_weather" and text
    )
    assert report["partialText"]
    assert written.startswith(report["partialText"])
    assert len(report["partialText"]) < len(written)  # it dropped mid-reply
    tool = assistant["parts"][2]
    assert tool["input"] == {"city": "Lyon"}
    assert tool["state"] == "output-available"
    assert assistant["metadata"] == {
        "model": "fake-agent-1",
        "usage": {"inputTokens": 12, "outputTokens": 42, "totalTokens": 54, "reasoningTokens": 9},
    }
    statuses = [(r["method"], r["url"].rsplit("/", 1)[-1], r["status"]) for r in report["requests"]]
    assert statuses == [("POST", "chat", 200), ("GET", "stream", 200), ("GET", "stream", 204)]
    assert report["messagesAfterSecondResume"] == report["messagesAfterEnd"] == 2


def test_stop_from_another_client_ends_the_reply_with_abort(node: str, bases: list[str]) -> None:
    report = run_client(node, "stop", bases)
    assert report["lastParts"] == ["abort"]
    [chat] = report["chats"]
    assert reply_parts(chat["messages"][1]) != expected_reply("Oslo")  # stopped mid-reply


def test_a_new_message_takes_the_chat_over(node: str, bases: list[str]) -> None:
    report = run_client(node, "takeover", bases)
    assert report["lastPartsA"] == ["abort"]  # the old reply, cancelled
    assert report["lastPartsB"] == ["finish"]
    first, second = report["chats"]
    assert reply_parts(second["messages"][1]) == expected_reply("Madrid")
    assert reply_parts(first["messages"][1]) != expected_reply("Rome")  # cut short


def test_the_example_app_checks_who_asks(bases: list[str]) -> None:
    with httpx.Client(base_url=bases[0], timeout=10) as client:
        denied = client.get("/api/chat/any/stream", headers={"x-user": "intruder"})
        assert denied.status_code == 404
        assert client.get("/api/chat/never-started/stream").status_code == 204
        assert client.post("/api/chat/never-started/stop").status_code == 204


_ANY_TEXT = st.text(st.characters(codec="utf-8"), max_size=12)
_LLM_EVENTS = st.one_of(
    st.builds(llm.TextDelta, _ANY_TEXT),
    st.builds(llm.ReasoningDelta, _ANY_TEXT),
    st.builds(llm.ContentStart, st.integers(0, 3), st.sampled_from(["text", "reasoning"])),
    st.builds(llm.ContentEnd, st.integers(0, 3)),
    st.builds(llm.ToolCallStart, st.sampled_from(["c1", "c2"]), st.just("lookup")),
    st.builds(llm.ToolCallDelta, st.sampled_from(["c1", "c2"]), _ANY_TEXT),
    st.builds(llm.MessageStart, st.none() | st.just("m1")),
    st.builds(llm.MessageStop),
    st.builds(llm.Data, st.just("note"), _ANY_TEXT),
)


@given(st.lists(_LLM_EVENTS | _ANY_TEXT, max_size=25))
def test_the_fast_encoding_of_deltas_writes_what_the_parts_say(items: list[Any]) -> None:
    """``UIMessageEncoder.encode`` writes a delta of the open run without
    building its part: the same text as the parts, event by event."""
    fast, reference = UIMessageEncoder("m"), UIMessageEncoder("m")
    for seq, item in enumerate(items, start=1):
        name, data = item.__replayhub_event__() if not isinstance(item, str) else ("message", item)
        event = Event(f"1-{seq}", name, data)
        assert fast.encode(event) == "".join(encode_part(part) for part in reference.parts(event))
