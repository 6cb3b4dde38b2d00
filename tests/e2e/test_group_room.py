"""A room with several people and the agent, through a real livekit-server: every person is heard and attributed,
the agent answers the one who calls it by name and keeps out of the others' conversation, people come and go
(one mid-sentence, fifteen at once) without errors or leaked listeners, and only a moderator may mute it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from livekit import api, rtc

from agent.group import mentions
from stack.services import Stack
from tests.support.ports import loopback_ports
from tests.support.rtc_client import Client
from tests.support.speech import rms, speak

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

GROUP = {"agents": [{"metadata": json.dumps({"mode": "group"})}]}
GRACE_S = 4.0


@pytest.fixture(scope="module")
def group_stack(scripted_env: dict[str, str], artifacts: Path) -> Iterator[Stack]:
    """The e2e stack (local STT/TTS, scripted LLM) with a short grace before the agent leaves an empty room."""
    log_dir = artifacts / "logs-test_group_room"
    log_dir.mkdir(exist_ok=True)
    # Fifteen people join at once: more than the token endpoint's default burst for one address.
    env = {**scripted_env, "GROUP_EMPTY_GRACE_S": str(GRACE_S), "TOKEN_RATE_BURST": "100"}
    with Stack(loopback_ports(), env=env, log_dir=log_dir) as running:
        yield running


def person(stack: Stack, identity: str, name: str, **kwargs) -> Client:
    return Client(stack.token_url, identity=identity, name=name, room_config=GROUP, agent_only=True, **kwargs)


async def agent_ready(client: Client) -> None:
    await client.wait_for(lambda: client.agent_identity is not None, 40, "the agent's audio track")
    await client.wait_for(lambda: client.texts(client.agent_identity), 30, "the agent's greeting")
    await client.quiet(1.0)


def heard(client: Client, identity: str) -> str:
    return " ".join(client.texts(identity)).lower()


def listeners(stack: Stack) -> float:
    text = httpx.get(f"http://127.0.0.1:{stack.settings.agent_metrics_port}/metrics", timeout=5).text
    found = re.search(r"^voice_agent_group_listeners\s+(\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


async def wait_listeners(stack: Stack, expected: float, timeout: float, at_least: float | None = None) -> None:
    """Until the agent listens to `expected` people (or, after the timeout, to at least `at_least`)."""
    deadline = time.monotonic() + timeout
    while (now := listeners(stack)) != expected:
        if at_least is not None and time.monotonic() > deadline and now >= at_least:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"the agent listens to {now:.0f} people, expected {expected:.0f}")
        await asyncio.sleep(0.25)


def agent_problems(stack: Stack, since: int) -> list[str]:
    """ERROR lines and asyncio's complaints in the agent's log after byte offset `since`."""
    path = stack.log_dir / "agent.log"
    problems = []
    with path.open(encoding="utf-8") as log:
        log.seek(since)
        for line in log:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                record = {"message": line, "level": "ERROR" if "Traceback" in line else "INFO"}
            message = str(record.get("message", ""))
            if record.get("level") in ("ERROR", "CRITICAL") or "Task was destroyed" in message:
                problems.append(message[:300])
    return problems


def log_offset(stack: Stack) -> int:
    return (stack.log_dir / "agent.log").stat().st_size


async def close_all(*clients: Client) -> None:
    for client in clients:
        with contextlib.suppress(Exception):
            await client.close()


async def test_the_addressed_person_is_answered_and_cross_talk_is_left_alone(group_stack, scripted_llm):
    room = "family-call"
    alice, bob, carol = (person(group_stack, i, n) for i, n in (("alice", "Alice"), ("bob", "Bob"), ("carol", "Carol")))
    try:
        for client in (alice, bob, carol):
            await client.join(room)
        await agent_ready(alice)
        await alice.quiet(1.5)  # a welcome for whoever joined after the agent
        asked_before = len(scripted_llm.requests)

        # Bob and Carol talk to each other.
        crosstalk = time.monotonic()
        await bob.say(speak("Carol, did you watch the football game last night?"))
        await carol.wait_for(lambda: "game" in heard(carol, "bob"), 30, "Bob's words on lk.transcription")
        await carol.say(speak("Yes Bob, it was a great match, we should go together."))
        await alice.wait_for(lambda: "match" in heard(alice, "carol"), 30, "Carol's words on lk.transcription")
        await asyncio.sleep(4.0)
        assert alice.speech_since(crosstalk) is None, "the agent spoke into Bob and Carol's conversation"
        assert len(scripted_llm.requests) == asked_before, "the agent asked its LLM about the cross-talk"

        # Alice calls the agent by name and asks.
        await alice.say(speak("Jarvis, what time is it in Tokyo?"))
        question_end = alice.last_voiced_at
        await alice.wait_for(lambda: alice.speech_since(question_end) is not None, 40, "the agent's spoken answer")
        answered = alice.speech_since(question_end) - question_end
        await alice.wait_for(lambda: "tokyo" in heard(alice, alice.agent_identity), 30, "the answer's transcript")
        await alice.quiet(1.0)
    finally:
        await close_all(alice, bob, carol)
    print(f"\nend of 'Jarvis, what time is it in Tokyo?' -> agent audio at the client: {answered * 1000:.0f} ms")

    # The LLM saw who spoke, in order, with display names: Bob, Carol, then Alice's question last.
    request = scripted_llm.requests[asked_before]
    said = [m["content"] for m in request["messages"] if m["role"] == "user"]
    said = [c if isinstance(c, str) else " ".join(p.get("text", "") for p in c) for c in said]
    assert said[-1].startswith("Alice: ") and "tokyo" in said[-1].lower(), said
    speakers = [line.split(":", 1)[0] for line in said[-3:]]
    assert speakers == ["Bob", "Carol", "Alice"], said
    # The answer is the sentence of the tool the LLM called for Alice, said as it is: one LLM round, not a second one
    # to phrase it.
    assert all(r["messages"][-1]["role"] != "tool" for r in scripted_llm.requests), "asked again after the tool"
    assert re.search(r"\bit is \d\d:\d\d on \w+day\b", heard(alice, alice.agent_identity)), heard(
        alice, alice.agent_identity
    )

    # Everyone's words went out under their own identity, and everyone saw the others'.
    for client in (alice, bob, carol):
        assert "game" in heard(client, "bob") and "match" in heard(client, "carol"), client.identity
        # The name as Whisper spelt it ("Jaravis" in one run), which is what the agent's policy matched.
        assert "tokyo" in heard(client, "alice") and mentions(heard(client, "alice"), "Jarvis"), client.identity
    assert "game" not in heard(alice, "alice") + heard(alice, "carol")


def audio_gaps(client: Client, since: float, until: float) -> float:
    """The longest stretch without audible agent audio between `since` and `until`."""
    loud = [at for at, pcm in client.agent_frames if since < at < until and rms(pcm) > 0.005]
    return max(np.diff([since, *loud, until])) if loud else until - since


async def test_only_the_person_answered_or_someone_calling_the_agent_interrupts_it(group_stack):
    room = "stand-up"
    ann, ben = person(group_stack, "ann", "Ann"), person(group_stack, "ben", "Ben")
    try:
        await ann.join(room)
        await ben.join(room)
        await agent_ready(ann)
        await ann.quiet(1.5)
        await ann.say(speak("Jarvis, please tell me a long story."))
        asked = ann.last_voiced_at
        await ann.wait_for(lambda: ann.speech_since(asked) is not None, 40, "the story to start")
        await asyncio.sleep(2.0)

        # Ben talks to Ann over the story: it goes on.
        ben_from = time.monotonic()
        await ben.say(speak("Ann, I will go and get us some coffee now."))
        await asyncio.sleep(3.0)
        ben_until = time.monotonic()
        assert audio_gaps(ann, ben_from, ben_until) < 1.5, "Ben's words to Ann stopped the agent"

        # Ann, whom the agent is answering, talks over it: it stops.
        interruption = speak("Wait, stop, stop. I have something to add.")
        sent = time.monotonic()
        await ann.say(interruption)
        await asyncio.sleep(3.0)
        after = [at for at, pcm in ann.agent_frames if at > sent + 2.5 and rms(pcm) > 0.005]
    finally:
        await close_all(ann, ben)
    assert not after, "the agent kept talking over the person it was answering"
    story = " ".join(ann.texts(ann.agent_identity))
    assert "Sentence 1 " in story and "Sentence 12" not in story, story


async def test_people_leaving_mid_sentence_and_fifteen_joining_at_once(group_stack):
    room = "town-hall"
    olga = person(group_stack, "olga", "Olga")
    dave = person(group_stack, "dave", "Dave")
    crowd = [person(group_stack, f"guest-{n}", f"Guest {n}", subscribe=False) for n in range(15)]
    try:
        await olga.join(room)
        await agent_ready(olga)
        since = log_offset(group_stack)
        base = listeners(group_stack)

        # Dave joins and leaves in the middle of a sentence.
        await dave.join(room)
        await wait_listeners(group_stack, base + 1, 20)
        talking = asyncio.create_task(dave.say(speak("I want to tell you all about my long holiday in the mountains")))
        await asyncio.sleep(1.5)
        await dave.close()
        talking.cancel()
        await wait_listeners(group_stack, base, 20)

        # Fifteen people join at once, then all leave at once.
        await asyncio.gather(*(guest.join(room) for guest in crowd))
        # On a loaded 2-core box one of fifteen simultaneous clients' audio now and then never reaches the agent
        # (that client's own connection is stuck: it takes 20 s to close); the rest must all be heard.
        await wait_listeners(group_stack, base + 15, 60, at_least=base + 14)
        await olga.wait_for(
            lambda: any("welcome" in t.lower() for t in olga.texts(olga.agent_identity)), 30, "the welcome"
        )
        await asyncio.gather(*(guest.close() for guest in crowd))
        await wait_listeners(group_stack, base, 30)
        await olga.quiet(1.0)

        # The agent still answers the person who stayed.
        await olga.say(speak("Jarvis, what time is it in Tokyo?"))
        asked = olga.last_voiced_at
        await olga.wait_for(lambda: olga.speech_since(asked) is not None, 40, "an answer after the crowd left")
    finally:
        await close_all(olga, dave, *crowd)
    welcome = " ".join(t for t in olga.texts(olga.agent_identity) if "welcome" in t.lower())
    assert "others" in welcome, welcome  # fifteen names are summed up, not read out
    assert agent_problems(group_stack, since) == []


async def test_only_a_moderator_mutes_the_agent_and_it_leaves_after_the_last_person(group_stack):
    room = "support-call"
    # The moderator role comes only with the room's moderator invite, made for Maria (a client cannot claim it).
    async with httpx.AsyncClient() as http:
        made = await http.post(
            f"{group_stack.token_url}/api/rooms", json={"room_name": room, "participant_identity": "maria"}
        )
    assert made.status_code == 201, made.text
    maria = person(group_stack, "maria", "Maria", invite=made.json()["moderator_invite"])
    pat = person(group_stack, "pat", "Pat")
    try:
        await maria.join(room)
        await agent_ready(maria)
        await pat.join(room)
        await maria.wait_for(lambda: "pat" in heard(maria, maria.agent_identity), 30, "Pat's welcome by name")
        await maria.quiet(1.0)
        agent = maria.agent_identity

        with pytest.raises(rtc.RpcError) as refused:
            await pat.room.local_participant.perform_rpc(destination_identity=agent, method="agent.mute", payload="")
        assert "only a moderator" in refused.value.message
        assert maria.room.remote_participants[agent].attributes.get("agent.muted") != "true"

        reply = await maria.room.local_participant.perform_rpc(
            destination_identity=agent, method="agent.mute", payload=""
        )
        assert reply == "muted"
        await maria.wait_for(
            lambda: maria.room.remote_participants[agent].attributes.get("agent.muted") == "true", 10, "muted"
        )
        # Muted, it does not answer even when called by name.
        await pat.say(speak("Jarvis, what time is it in Tokyo?"))
        asked = pat.last_voiced_at
        await maria.wait_for(lambda: "tokyo" in heard(maria, "pat"), 30, "Pat's question transcribed")
        await asyncio.sleep(4.0)
        assert pat.speech_since(asked) is None, "a muted agent answered"

        with pytest.raises(rtc.RpcError):
            await pat.room.local_participant.perform_rpc(destination_identity=agent, method="agent.unmute", payload="")
        reply = await maria.room.local_participant.perform_rpc(
            destination_identity=agent, method="agent.unmute", payload=""
        )
        assert reply == "unmuted"
    finally:
        await close_all(maria, pat)

    # With nobody left, the agent leaves after the grace period.
    s = group_stack.settings
    async with api.LiveKitAPI(f"http://127.0.0.1:{s.livekit_port}", s.livekit_api_key, s.livekit_api_secret) as lk:
        deadline = time.monotonic() + GRACE_S + 20
        while True:
            try:
                left = await lk.room.list_participants(api.ListParticipantsRequest(room=room))
                present = [p.identity for p in left.participants]
            except api.TwirpError:  # the room itself is gone
                present = []
            if not present:
                break
            assert time.monotonic() < deadline, f"still in the empty room: {present}"
            await asyncio.sleep(0.5)
