"""A three-person room in a real browser (Debian's Chromium via Playwright): the page of one person (Alice, the fake
microphone) with two `livekit.rtc` people (Bob and Carol) and the agent, against the real stack. The page shows
everyone, who is speaking, and each person's words under their name."""

from __future__ import annotations

import asyncio
import json
import re

import pytest
from playwright.async_api import async_playwright, expect

from tests.support.browser import CHROMIUM, QUIET_FLAGS, with_silence, write_wav
from tests.support.rtc_client import Client
from tests.support.speech import speak

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

GROUP = {"agents": [{"metadata": json.dumps({"mode": "group"})}]}
ROOM = "web-group"


async def test_three_people_and_the_agent_on_the_page(stack, scripted_llm, artifacts, tmp_path):
    # Alice says something to the room (not to the agent) about 14 s after her microphone opens.
    wav = write_wav(
        tmp_path / "alice.wav", with_silence(speak("Hello everyone, nice to see you all."), before_s=14, after_s=60)
    )
    args = [*QUIET_FLAGS, "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]
    args.append(f"--use-file-for-fake-audio-capture={wav}%noloop")
    bob = Client(stack.token_url, identity="bob", name="Bob", room_config=GROUP, agent_only=True)
    carol = Client(stack.token_url, identity="carol", name="Carol", room_config=GROUP, agent_only=True)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        page = await browser.new_page(viewport={"width": 1000, "height": 1000})
        try:
            await page.goto(f"{stack.token_url}/?room={ROOM}&name=Alice")
            await page.get_by_role("button", name="Connect", exact=True).click()
            await expect(page.locator(".person.agent")).to_have_count(1, timeout=40_000)
            await bob.join(ROOM)
            await carol.join(ROOM)

            people = page.get_by_role("region", name="People in the room").locator(".person")
            await expect(people).to_have_count(4, timeout=20_000)
            await expect(page.locator('.person[data-identity="bob"]')).to_contain_text("Bob")
            await expect(page.locator('.person[data-identity="carol"]')).to_contain_text("Carol")
            await expect(people.filter(has_text="Alice (you)")).to_have_count(1)
            await bob.quiet(1.5, timeout=40)  # the agent's welcome

            # Bob talks to Carol: the page shows him speaking, then his words under his name.
            talking = asyncio.create_task(bob.say(speak("Carol, did you watch the football game last night?")))
            speaking = page.locator('.person[data-identity="bob"][data-speaking="true"]')
            await expect(speaking).to_have_count(1, timeout=10_000)
            await talking
            await expect(speaking).to_have_count(0, timeout=10_000)
            bobs = page.locator(".line.other").filter(has_text=re.compile("game", re.I))
            await expect(bobs).to_have_count(1, timeout=30_000)
            await expect(bobs.locator(".speaker")).to_have_text("Bob")
            await carol.say(speak("Yes Bob, it was a great match."))
            carols = page.locator(".line.other").filter(has_text=re.compile("match", re.I))
            await expect(carols.locator(".speaker")).to_have_text("Carol", timeout=30_000)

            # Alice's own words, from the page's microphone, as "You".
            alices = page.locator(".line.user").filter(has_text=re.compile("everyone", re.I))
            await expect(alices.locator(".speaker")).to_have_text("You", timeout=40_000)

            # Carol asks the agent by name: it answers (a new line under the agent), and her question is hers.
            agent_lines = page.locator(".line.agent")
            before = await agent_lines.count()
            await carol.say(speak("Jarvis, what time is it in Tokyo?"))
            await expect(agent_lines.nth(before)).to_be_visible(timeout=45_000)
            # (Whisper spells the name as it hears it: "Larvis" in one run; the question is the one about Tokyo.)
            await expect(page.locator(".line.other").filter(has_text=re.compile("tokyo", re.I))).to_contain_text(
                "Carol"
            )
            await expect(agent_lines.last.locator(".speaker")).to_have_text("Jarvis")
            await page.screenshot(path=str(artifacts / "web-group-room.png"))
        finally:
            print("\nthe page's transcript:", await page.locator(".line").all_inner_texts())
            await browser.close()
            await bob.close()
            await carol.close()
    # What each LLM request answered (its last user message): Carol's question, never Alice's or Bob's remarks.
    answered = [[m["content"] for m in r["messages"] if m["role"] == "user"][-1] for r in scripted_llm.requests]
    answered = [str(c) for c in answered]
    assert any(c.startswith("Carol: ") and "jarvis" in c.lower() for c in answered), answered
    assert not any(c.startswith(("Alice: ", "Bob: ")) for c in answered), answered
