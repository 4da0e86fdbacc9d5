"""The ``replayhub`` command line against a real Redis."""

from __future__ import annotations

import json
import sys

import anyio
import httpx
import pytest
from anyio.abc import TaskStatus

from replayhub import Hub

from .demo_server import DemoServer
from .redis_server import RedisServer, free_port

NAMESPACE = "cli"


async def run_cli(*args: str) -> tuple[int, str, str]:
    result = await anyio.run_process([sys.executable, "-m", "replayhub", *args], check=False)
    return result.returncode, result.stdout.decode(), result.stderr.decode()


async def test_tail_prints_events_and_exits_with_the_outcome(redis_server: RedisServer) -> None:
    url = ["--url", redis_server.url, "--namespace", NAMESPACE]
    async with Hub.from_url(redis_server.url, namespace=NAMESPACE) as hub:
        async with hub.produce("done") as stream:
            for token in ["Hello", ", ", "world"]:
                await stream.send(token)
            await stream.send({"usage": 3}, event="usage")
        with pytest.raises(RuntimeError):
            async with hub.produce("failed") as stream:
                await stream.send("x")
                raise RuntimeError("model broke")

    code, out, _ = await run_cli("tail", "done", *url)
    assert code == 0
    assert out.startswith("Hello, world")
    assert "[usage] {'usage': 3}" in out
    assert out.rstrip().endswith("[done]")

    code, out, _ = await run_cli("tail", "done", *url, "--json")
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line.get("data") for line in lines[:4]] == ["Hello", ", ", "world", {"usage": 3}]
    assert lines[-1] == {"outcome": "done", "error": None, "error_type": None}

    code, out, _ = await run_cli("tail", "done", *url, "--json", "--after", lines[1]["id"])
    resumed = [json.loads(line).get("data") for line in out.splitlines()]
    assert resumed[:2] == ["world", {"usage": 3}]

    code, out, _ = await run_cli("tail", "failed", *url)
    assert code == 1
    assert out.rstrip().endswith("[failed] (internal) RuntimeError: model broke")

    code, out, _ = await run_cli("info", "failed", *url)
    assert code == 0
    assert json.loads(out)["error_type"] == "internal"

    code, out, _ = await run_cli("info", "done", *url)
    assert code == 0
    assert json.loads(out)["state"] == "done"
    assert json.loads(out)["events"] == 4


async def test_cancel_stops_a_producer_in_another_process(
    redis_server: RedisServer, anyio_backend: str
) -> None:
    url = ["--url", redis_server.url, "--namespace", NAMESPACE, "--loop", anyio_backend]

    async def producer(hub: Hub, *, task_status: TaskStatus[None]) -> None:
        async with hub.produce("live") as stream:
            task_status.started()
            while True:
                await stream.send("tick")
                await anyio.sleep(0.01)

    async with Hub.from_url(redis_server.url, namespace=NAMESPACE) as hub:
        async with anyio.create_task_group() as tg:
            await tg.start(producer, hub)
            code, out, _ = await run_cli("cancel", "live", *url, "--wait", "5")
        info = await hub.info("live")
    assert (code, out.strip()) == (0, "cancelled")
    assert info is not None
    assert info.state.value == "cancelled"
    code, out, _ = await run_cli("tail", "live", *url)
    assert code == 3
    code, out, _ = await run_cli("info", "live", *url)
    assert (code, json.loads(out)["state"]) == (0, "cancelled")


async def test_the_cli_sees_the_demos_sessions_without_a_namespace_flag(
    redis_server: RedisServer, anyio_backend: str
) -> None:
    with DemoServer(anyio_backend, redis_server.url) as demo:
        async with httpx.AsyncClient(base_url=demo.base, timeout=10) as client:
            started = await client.post("/api/chats", json={"prompt": "hello"})
            session_id = started.json()["session_id"]
        code, out, err = await run_cli(
            "tail", session_id, "--url", redis_server.url, "--loop", anyio_backend
        )
    assert code == 0, err
    assert out.rstrip().endswith("[done]")


@pytest.mark.parametrize(
    "args",
    [
        ["info", "x", "--url", "nope://host"],
        ["tail", "x", "--url", "redis://host:notaport"],
        ["info", "x", "--url", f"redis://127.0.0.1:{free_port()}/0"],
        ["cancel", "x", "--url", f"redis://127.0.0.1:{free_port()}/0"],
    ],
)
async def test_bad_or_unreachable_urls_are_one_line_errors(args: list[str]) -> None:
    code, _, err = await run_cli(*args)
    assert code == 5
    assert err.startswith("error: ")
    assert err.count("\n") == 1
    assert "Traceback" not in err


async def test_unknown_sessions_are_errors(redis_server: RedisServer) -> None:
    for command in ("info", "tail", "cancel"):
        code, _, err = await run_cli(command, "nobody", "--url", redis_server.url)
        assert code == 5
        assert "nobody" in err


@pytest.mark.parametrize("command", ["tail", "cancel", "info", "demo"])
async def test_every_command_has_help(command: str) -> None:
    code, out, _ = await run_cli(command, "--help")
    assert code == 0
    assert "Usage:" in out
