"""The documentation's code runs: every sample in docs/ is included from a file
under docs/examples/ (or the demo page), and each of those files is run here;
the README's samples are run as they stand."""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import anyio
import httpx
import pytest

from replayhub import Hub, State

from .redis_server import ACL_USER, RedisServer, free_port

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "docs" / "examples"
FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.DOTALL | re.MULTILINE)
INCLUDE = re.compile(r'^--8<-- "([^":]+)(?::(\w+))?"$')
CODE_LANGUAGES = {"python", "javascript"}


@pytest.fixture
def examples() -> Iterator[None]:
    sys.path.insert(0, str(EXAMPLES))
    try:
        yield
    finally:
        sys.path.remove(str(EXAMPLES))


def example(name: str) -> ModuleType:
    return importlib.import_module(name)


def doc_pages() -> list[Path]:
    return sorted((ROOT / "docs").rglob("*.md"))


def test_every_code_sample_in_the_docs_is_an_included_file() -> None:
    for page in doc_pages():
        for language, body in FENCE.findall(page.read_text()):
            if language not in CODE_LANGUAGES:
                continue
            for line in filter(None, body.splitlines()):
                match = INCLUDE.match(line)
                assert match, f"{page.name}: inline {language} sample; include a tested file"
                path, section = match.groups()
                text = (ROOT / path).read_text()
                if section:
                    assert f"--8<-- [start:{section}]" in text, f"{path} has no {section}"
                    assert f"--8<-- [end:{section}]" in text, f"{path} has no {section} end"


def test_the_documented_acl_user_is_the_one_the_suite_runs_as() -> None:
    documented = (ROOT / "docs" / "redis.md").read_text()
    assert ACL_USER.format(pattern="app:*") in documented


def readme_samples() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    return [body for language, body in FENCE.findall(readme) if language == "python"]


@pytest.mark.parametrize("index", range(len(readme_samples())))
def test_readme_samples_run(index: int, capsys: pytest.CaptureFixture[str]) -> None:
    namespace: dict[str, object] = {"__name__": "readme"}
    exec(compile(readme_samples()[index], f"README sample {index}", "exec"), namespace)
    main = namespace.get("main")
    if callable(main):
        anyio.run(main)


async def test_quickstart_and_getting_started(
    examples: None, capsys: pytest.CaptureFixture[str]
) -> None:
    await example("quickstart").main()
    assert "Hello" in capsys.readouterr().out
    await example("getting_started").main()
    assert "done" in capsys.readouterr().out


def test_redis_url_samples_make_hubs(examples: None) -> None:
    assert isinstance(example("deployment_urls").hub, Hub)


def test_the_testing_guide_passes_with_pytest() -> None:
    # test_chat_app.py also drives fastapi_app.py and resume_client.py.
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_chat_app.py"],
        cwd=EXAMPLES,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(EXAMPLES)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_trio_app_on_hypercorn(examples: None) -> None:
    trio_app = example("trio_app")
    port = free_port()
    async with anyio.create_task_group() as task_group:
        await task_group.start(trio_app.serve, port)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            session_id = (await client.post("/counts")).json()["session_id"]
            response = await client.get(f"/counts/{session_id}/events")
            assert "event: replayhub.end" in response.text
            counts = re.findall(r"^data: (\d+)$", response.text, re.MULTILINE)
            assert counts == [str(number) for number in range(1, 11)]
            stopped = await client.post(f"/counts/{session_id}/stop")
            assert stopped.json() == {"state": "done"}  # it had already ended
        task_group.cancel_scope.cancel()


async def test_worker_produces_what_the_web_tier_asked_for(
    examples: None, redis_server: RedisServer
) -> None:
    import coredis

    worker = example("worker")
    namespace = f"docs{free_port()}"
    async with (
        Hub.from_url(redis_server.url, namespace=namespace) as web_hub,
        Hub.from_url(redis_server.url, namespace=namespace) as worker_hub,
        coredis.Redis.from_url(redis_server.plain_url) as redis,
        anyio.create_task_group() as task_group,
    ):
        await redis.delete([worker.JOBS])
        task_group.start_soon(worker.work, worker_hub, redis)
        session_id = await worker.request_reply(redis, "hi")
        await worker.wait_until_started(web_hub, session_id)
        async with web_hub.subscribe(session_id) as events:
            text = "".join([str(event.data) async for event in events])
        assert events.outcome is not None
        assert events.outcome.state is State.DONE
        assert text == "You said 'hi'; here is the reply. "

        # Stop, from the web side, a reply the worker runs.
        session_id = await worker.request_reply(redis, "a long one")
        await worker.wait_until_started(web_hub, session_id)
        info = await web_hub.cancel(session_id, wait=5)
        assert info is not None
        assert info.state is State.CANCELLED
        task_group.cancel_scope.cancel()


async def test_the_llm_guide_producers_relay_the_real_sdks(
    examples: None, capsys: pytest.CaptureFixture[str]
) -> None:
    from replayhub import llm

    from .llm_sdks import RecordedBody, anthropic_client, openai_client, sample

    producers = example("llm_producers")
    async with Hub() as hub:
        body = RecordedBody(sample("openai_chat_tool_usage.sse"))
        await producers.answer_with_openai(hub, openai_client(body), "a", "Weather?")
        assert "Let me check the weather." in capsys.readouterr().out
        body = RecordedBody(sample("openai_responses_reasoning_text_tool.sse"))
        await producers.answer_with_responses(hub, openai_client(body), "b", "Weather?")
        body = RecordedBody(sample("anthropic_thinking_text_tool.sse"))
        await producers.answer_with_claude(hub, anthropic_client(body), "c", "Weather?")
        assert "toolu_01X get_weather {'city': 'Paris'}" in capsys.readouterr().out
        replies = [await llm.collect(hub, chat_id) for chat_id in "abc"]
    assert [reply.finish_reason for reply in replies] == ["tool-calls"] * 3
    assert replies[1].reasoning == "Need the weather tool."


async def test_the_llm_guide_by_hand_readers_and_errors(
    examples: None, capsys: pytest.CaptureFixture[str]
) -> None:
    by_hand = example("llm_by_hand")
    async with Hub() as hub:
        await by_hand.produce_by_hand(hub, "chat:1")
        await by_hand.print_reply(hub, "chat:1")
        printed = capsys.readouterr().out
        assert printed == (
            "[thinking] The user wants the weather...\n"
            "Let me check. [calls get_weather with {'city': 'Paris'}]\n"
            "It is 21 °C in Paris.\n[52 tokens]\n[done]\n"
        )
        saved = await by_hand.save_reply(hub, "chat:1")
    assert saved == {
        "id": "m1",
        "text": "Let me check. It is 21 °C in Paris.",
        "reasoning": "The user wants the weather...",
        "tool_calls": [("c1", "get_weather", {"city": "Paris"})],
        "usage": {
            "input_tokens": 12,
            "output_tokens": 40,
            "reasoning_tokens": None,
            "cached_input_tokens": None,
        },
        "state": "done",
    }
    await by_hand.main()
    assert capsys.readouterr().out == "The model is busy: try again in a minute.\n"
