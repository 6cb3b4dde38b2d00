"""The web client in a real browser (Debian's Chromium via Playwright) against the real stack."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from stack.services import Stack
from tests.support.browser import launch, with_silence, write_wav
from tests.support.ports import loopback_ports
from tests.support.speech import speak

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def question_wav(tmp_path_factory):
    # Silence first, so the agent's greeting ends before the question; silence after, as a quiet room.
    samples = with_silence(speak("What time is it in Tokyo?", speed=140), before_s=6.0, after_s=40.0)
    return write_wav(tmp_path_factory.mktemp("mic") / "question.wav", samples)


@pytest.fixture(scope="module")
def playwright():
    with sync_playwright() as pw:
        yield pw


AUDIBLE = "() => parseFloat(document.querySelector('.agent-viz')?.dataset.agentLevel || '0') > 0.02"


def wait_until_agent_audible(page: Page, timeout_s: float) -> None:
    """The page's own analyser of the agent's track measures sound (not just a track object)."""
    page.wait_for_function(AUDIBLE, timeout=timeout_s * 1000, polling=50)


def agent_level(page: Page, seconds: float) -> float:
    """Highest agent audio level the page measured over `seconds` (its visualizer's analyser)."""
    peak, deadline = 0.0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = page.get_attribute(".agent-viz", "data-agent-level") or "0"
        peak = max(peak, float(value))
        page.wait_for_timeout(50)
    return peak


def test_talk_type_and_hang_up(stack, scripted_llm, playwright, question_wav, artifacts):
    browser = launch(playwright, question_wav)
    page = browser.new_page(viewport={"width": 1000, "height": 900})
    try:
        page.goto(stack.token_url)
        expect(page.get_by_role("heading", name="Voice agent")).to_be_visible()
        page.get_by_role("button", name="Connect", exact=True).click()

        # The greeting is heard at the page and shown.
        wait_until_agent_audible(page, 30)
        agent_lines = page.locator(".line.agent")
        expect(agent_lines.first).to_contain_text("How can I help", timeout=10_000)
        expect(page.get_by_test_id("state")).to_have_text("listening", timeout=30_000)

        # The spoken question (fake microphone) is transcribed and shown as the user's words ...
        expect(page.locator(".line.user").first).to_contain_text("Tokyo", timeout=45_000)
        # ... and the agent calls its tool and speaks the real time there, its words shown with its audio.
        wait_until_agent_audible(page, 45)
        expect(agent_lines.filter(has_text=re.compile(r"It is \d\d:\d\d on \w+day, \w+ \d+ in Tokyo"))).to_have_count(
            1, timeout=10_000
        )
        expect(page.get_by_test_id("state")).to_have_text("listening", timeout=30_000)

        # Typed chat reaches the agent (lk.chat) and gets a spoken, transcribed answer.
        page.get_by_label("Message to the agent").fill("hello from the keyboard")
        page.get_by_role("button", name="Send").click()
        expect(page.locator(".line.user").filter(has_text="hello from the keyboard")).to_have_count(1)
        expect(agent_lines.filter(has_text="You said: hello from the keyboard")).to_have_count(1, timeout=30_000)
        page.screenshot(path=str(artifacts / "web-conversation.png"))

        page.get_by_role("button", name="Disconnect").click()
        expect(page.get_by_role("button", name="Connect", exact=True)).to_be_visible()
        expect(page.get_by_test_id("state")).to_have_text("idle")
    finally:
        browser.close()

    asked = [r["messages"][-1] for r in scripted_llm.requests]
    assert any(m.get("role") == "user" and "hello from the keyboard" in str(m.get("content")) for m in asked)


def test_echo_test_plays_the_microphone_back(stack, playwright, question_wav):
    browser = launch(playwright, question_wav)
    page = browser.new_page()
    try:
        page.goto(stack.token_url)
        page.get_by_role("button", name="Echo test").click()
        expect(page.get_by_text("Echo test: speak")).to_be_visible(timeout=20_000)
        # Silence plays first (6 s), then the question comes back through the SFU about 0.5 s later.
        assert agent_level(page, 4.0) < 0.02, "echo before anything was said"
        assert agent_level(page, 6.0) > 0.02, "the microphone did not come back"
    finally:
        browser.close()


@pytest.fixture
def bare_stack(artifacts) -> Iterator[Stack]:
    """livekit-server and the token server only: enough to provoke connection failures."""
    with Stack(loopback_ports(), with_agent=False, log_dir=artifacts) as running:
        yield running


def test_refused_token_is_explained(bare_stack, playwright):
    browser = launch(playwright, None)
    page = browser.new_page()
    try:
        page.goto(f"{bare_stack.token_url}/?agent=someone-else")
        page.get_by_role("button", name="Connect", exact=True).click()
        expect(page.get_by_role("alert")).to_contain_text(
            "refused the request: agent 'someone-else' is not available here"
        )
        expect(page.get_by_role("button", name="Connect", exact=True)).to_be_enabled()
    finally:
        browser.close()


def test_denied_microphone_is_explained_and_typing_still_works(bare_stack, playwright, question_wav):
    # A microphone exists, but the person refuses the permission prompt.
    browser = launch(playwright, question_wav, allow_microphone=False)
    page = browser.new_page()
    try:
        page.goto(bare_stack.token_url)
        page.get_by_role("button", name="Connect", exact=True).click()
        expect(page.get_by_role("alert")).to_contain_text("Microphone access was denied", timeout=20_000)
        expect(page.get_by_label("Message to the agent")).to_be_visible()
    finally:
        browser.close()


def test_server_going_down_is_explained(bare_stack, playwright, question_wav):
    browser = launch(playwright, question_wav)
    page = browser.new_page()
    try:
        page.goto(bare_stack.token_url)
        page.get_by_role("button", name="Connect", exact=True).click()
        expect(page.get_by_role("button", name="Disconnect")).to_be_visible(timeout=20_000)

        livekit = next(s for s in bare_stack.services if s.name == "livekit-server")
        livekit.stop()
        expect(page.get_by_role("alert")).to_contain_text("Reconnecting", timeout=20_000)
        expect(page.get_by_test_id("state")).to_have_text("reconnecting")
        expect(page.get_by_role("alert")).to_contain_text("connection to the server was lost", timeout=60_000)

        page.get_by_role("button", name="Connect", exact=True).click()
        expect(page.get_by_role("alert")).to_contain_text("Can't reach the LiveKit server", timeout=30_000)

        token_server = next(s for s in bare_stack.services if s.name == "token-server")
        token_server.stop()
        page.get_by_role("button", name="Connect", exact=True).click()
        expect(page.get_by_role("alert")).to_contain_text("Can't reach the token server")
    finally:
        browser.close()
