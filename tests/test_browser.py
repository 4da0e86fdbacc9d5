"""The demo page in a real headless Chromium (Debian's), driven by Playwright:
a reload mid-reply ends with the whole reply exactly once; Stop cancels it."""

from __future__ import annotations

import json
import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from replayhub.demo.fake_llm import reasoning_for, reply_to

from .demo_server import WORDS, DemoServer

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]


@pytest.fixture
def browser_page() -> Iterator[object]:
    if shutil.which("chromium") is None and not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed; scripts/check installs it")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield browser.new_page()
        finally:
            browser.close()


def session_state(server: DemoServer, session_id: str) -> dict[str, object]:
    with urllib.request.urlopen(f"{server.base}/api/chats/{session_id}", timeout=5) as answer:
        result: dict[str, object] = json.load(answer)
    return result


def test_reload_mid_reply_then_stop(browser_page: object, tmp_path: Path) -> None:
    from playwright.sync_api import Page, expect

    page = browser_page
    assert isinstance(page, Page)
    with DemoServer("asyncio", pace=0.04) as server:
        page.goto(server.base)
        prompt = "Why resumable streams?"
        page.fill("#prompt", prompt)
        page.click("#send")
        page.wait_for_function("document.querySelector('#reply').textContent.length > 40")
        page.reload()  # mid-reply: the page must pick up where it was
        expect(page.locator("#status")).to_have_text("done", timeout=20_000)
        assert page.locator("#reply").text_content() == reply_to(prompt, words=WORDS)
        # The fake model's reasoning, shown apart from the reply.
        expect(page.locator("#thinking")).to_be_visible()
        assert page.locator("#reasoning").text_content() == reasoning_for(prompt)
        page.screenshot(path=str(tmp_path / "demo-after-reload.png"))

        page.fill("#prompt", "Stop this one")
        page.click("#send")
        page.wait_for_function("document.querySelector('#reply').textContent.length > 20")
        page.click("#stop")
        expect(page.locator("#status")).to_have_text("cancelled", timeout=10_000)
        session_id = page.evaluate("sessionStorage.getItem('session')")
        stopped = session_state(server, session_id)
        assert stopped["state"] == "cancelled"
        shown = page.locator("#reply").text_content() or ""
        assert 0 < len(shown) < len(reply_to("Stop this one", words=WORDS))
        page.wait_for_timeout(300)
        assert (
            session_state(server, session_id)["events"] == stopped["events"]
        )  # generation stopped
        page.screenshot(path=str(tmp_path / "demo-stopped.png"))
