"""The group answer policy on the cases of a multi-person room (the room itself: tests/e2e/test_group_room.py)."""

from __future__ import annotations

import asyncio
import functools
from types import SimpleNamespace

import pytest
from livekit import rtc
from livekit.agents import AgentSession

from agent import personas
from agent.group import AnswerPolicy, _Turn, is_request, mentions, request_of, wanted
from agent.main import PersonaAgent
from agent.settings import AgentSettings
from tests.support.scripted_llm import ScriptedLLM

POLICY = AnswerPolicy(names=["Juniper"], mode="addressed", follow_up_s=8.0)
TWO_OTHERS = ["Bob", "Carol Smith"]


@pytest.mark.parametrize(
    "heard",
    [
        "Juniper, what time is it in Tokyo?",
        "what time is it in Tokyo, Juniper?",
        "Hey juniper what's the time",
        "Junipur, what time is it?",  # how Whisper might spell it
        "Juni per, what time is it?",
        "Is it raining in Paris, Juniper's forecast says?",
    ],
)
def test_the_agents_name_anywhere_gets_an_answer_even_among_several_people(heard):
    decision = POLICY.decide("alice", heard, others=TWO_OTHERS)
    assert decision.answer, decision


@pytest.mark.parametrize("heard", ["Jupiter is a big planet, isn't it?", "June paper", "a junior partner", "pepper"])
def test_other_words_are_not_the_name(heard):
    assert not mentions(heard, "Juniper")


@pytest.mark.parametrize("heard", ["Jarvis, what time is it?", "hey jarvus tell me a joke", "Jar vis, how far is it?"])
def test_the_default_name(heard):
    assert AnswerPolicy(names=AgentSettings().agent_names).decide("alice", heard, others=TWO_OTHERS).answer


def test_people_talking_to_each_other_get_no_answer():
    assert not POLICY.decide("bob", "Carol, did you watch the game last night?", others=["Alice", "Carol"]).answer
    assert not POLICY.decide("carol", "Yes, it was a great match.", others=["Alice", "Bob"]).answer
    # A question to the room that does not name the agent is for the people there.
    decision = POLICY.decide("bob", "What time is it?", others=["Alice", "Carol"])
    assert (decision.answer, decision.reason) == (False, "cross-talk")


def test_a_lone_person_is_answered_when_they_ask_not_when_they_mutter():
    assert POLICY.decide("alice", "What time is it in Tokyo?", others=[]).answer
    assert POLICY.decide("alice", "tell me a story", others=[]).answer
    assert not POLICY.decide("alice", "hmm, that is interesting", others=[]).answer


def test_the_person_just_answered_may_follow_up_without_the_name_but_not_to_someone_else():
    assert POLICY.decide("alice", "And in Paris?", others=TWO_OTHERS, follow_up_of="alice").answer
    assert not POLICY.decide("bob", "And in Paris?", others=TWO_OTHERS, follow_up_of="alice").answer
    assert not POLICY.decide("alice", "Bob, what do you think?", others=TWO_OTHERS, follow_up_of="alice").answer


def test_muted_agent_answers_nobody_and_typed_messages_are_addressed():
    assert not POLICY.decide("alice", "Juniper, what time is it?", others=TWO_OTHERS, muted=True).answer
    assert POLICY.decide("alice", "hello there", others=TWO_OTHERS, typed=True).answer


def test_hand_raised_mode_answers_only_raised_hands():
    hands = AnswerPolicy(names=["Juniper"], mode="hand_raised")
    assert hands.decide("alice", "Juniper, a question", others=TWO_OTHERS, hand_raised=True).answer
    assert not hands.decide("bob", "Juniper, a question", others=TWO_OTHERS, hand_raised=False).answer


def test_questions_and_requests():
    assert is_request("um, what is the capital of France")
    assert is_request("Could you convert five miles to kilometres")
    assert is_request("it's late?")
    assert not is_request("I think so too.")


def _room(*kinds):
    people = {f"p{n}": SimpleNamespace(kind=kind) for n, kind in enumerate(kinds)}
    return SimpleNamespace(remote_participants=people)


def test_room_mode_setting_then_dispatch_metadata_then_head_count():
    human, agent = rtc.ParticipantKind.PARTICIPANT_KIND_STANDARD, rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
    sip = rtc.ParticipantKind.PARTICIPANT_KIND_SIP
    auto = AgentSettings(agent_room_mode="auto")
    assert not wanted(auto, {}, _room(human, agent))
    assert wanted(auto, {}, _room(human, sip))
    assert wanted(auto, {"mode": "group"}, _room(human))
    assert not wanted(auto, {"mode": "single"}, _room(human, human))
    assert not wanted(AgentSettings(agent_room_mode="single"), {"mode": "group"}, _room(human, human))
    assert wanted(AgentSettings(agent_room_mode="group"), {}, _room(human))


def test_an_empty_name_list_is_refused_with_a_reason():
    with pytest.raises(ValueError, match="at least one name"):
        AgentSettings(group_agent_names=" , ")


async def test_a_pause_after_the_name_does_not_split_the_turn():
    heard: list[str] = []
    turn = _Turn(0.05, heard.append)
    turn.add("Jarvis,")
    await asyncio.sleep(0.02)
    turn.cancel()  # they speak on before the turn ends
    turn.add("what time is it in Tokyo?")
    turn.end_soon()
    await asyncio.sleep(0.1)
    assert heard == ["Jarvis, what time is it in Tokyo?"]
    turn.end_soon()  # nothing new: nothing more
    await asyncio.sleep(0.1)
    assert heard == ["Jarvis, what time is it in Tokyo?"]


async def test_a_complete_question_ends_the_turn_sooner():
    heard: list[str] = []
    turn = _Turn(5.0, heard.append, question_end_s=0.05)
    turn.add("Jarvis, what time is it?")
    await asyncio.sleep(0.2)
    assert heard == ["Jarvis, what time is it?"]


@pytest.mark.parametrize(
    ("line", "asked"),
    [
        ("Ana: Juniper, what time is it in Tokyo?", "what time is it in Tokyo?"),
        ("Ana: What is twelve times fourteen, Juniper?", "What is twelve times fourteen?"),
        ("Bob: Hey Junipur, convert ten miles to kilometers.", "convert ten miles to kilometers."),
        ("Bob: okay, juniper. read me my notes", "read me my notes"),
        ("Carol Smith: Tell Juniper a joke", "Tell Juniper a joke"),  # the name inside the request stays
    ],
)
def test_the_fast_path_reads_a_group_request_without_the_label_and_the_address(line, asked):
    assert request_of(line, ["Juniper"]) == asked


async def test_a_named_request_in_a_group_takes_the_fast_path_without_the_llm():
    def no_llm(ctx):
        raise AssertionError("the LLM was asked")

    scripted = ScriptedLLM(no_llm)
    agent = PersonaAgent(personas.get("assistant"))
    agent.request_of = functools.partial(request_of, names=["Juniper"])
    async with scripted, AgentSession(llm=scripted) as session:
        await session.start(agent)
        result = await session.run(user_input="Ana: Juniper, what is twelve times fourteen?")
        reply = result.expect.next_event().is_message(role="assistant").event().item.text_content
    assert "168" in reply and scripted.calls == []
