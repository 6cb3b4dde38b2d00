"""Text-mode evals of the agent (`session.run`) with a scripted LLM: greeting, tool routing, errors."""

from __future__ import annotations

import re

import pytest
from livekit.agents import AgentSession, llm
from livekit.agents.voice.io import TextOutput

from agent import personas
from agent.main import Assistant, PersonaAgent
from agent.settings import get_settings
from agent.skills import CallContext, clock
from agent.skills.notes import NoteStore
from tests.support.scripted_llm import ScriptedLLM


class Transcript(TextOutput):
    """Collects what the agent says (text mode has no audio)."""

    def __init__(self) -> None:
        super().__init__(label="test-transcript", next_in_chain=None)
        self.parts: list[str] = []

    async def capture_text(self, text: str) -> None:
        self.parts.append(text)

    def flush(self) -> None:
        self.parts.append("\n")

    @property
    def text(self) -> str:
        return "".join(self.parts)


def time_script(ctx: llm.ChatContext):
    """Asks for the time where the user says, then speaks the tool's answer (or apologises)."""
    last = ctx.items[-1]
    if last.type == "function_call_output":
        return f"Sorry, {last.output}." if last.is_error else f"It is {last.output}."
    place = re.search(r"in ([A-Z][\w ]+)", last.text_content or "")
    return ("get_time", {"location": place.group(1)}) if place else "Hello there."


async def test_greets_first_without_an_llm_round_trip():
    scripted = ScriptedLLM(time_script)
    transcript = Transcript()
    async with scripted, AgentSession(llm=scripted) as session:
        session.output.transcription = transcript
        await session.start(Assistant())
        result = await session.run(user_input="Hi")
        result.expect.next_event().is_message(role="assistant")
    greeting = personas.get("assistant").greeting
    assert transcript.text.startswith(greeting)
    # The greeting is not in the LLM's context (it made the small local model stop calling tools).
    assert all(greeting not in (item.text_content or "") for item in scripted.calls[0].items if item.type == "message")


@pytest.fixture
def llm_path(monkeypatch):
    """These evals test the LLM's tool routing, so the skills fast path steps aside."""
    monkeypatch.setattr(get_settings(), "skill_fast_path", False)


async def test_fast_path_answers_exact_requests_without_the_llm():
    def no_llm(ctx):
        raise AssertionError("the LLM was asked")

    scripted = ScriptedLLM(no_llm)
    async with scripted, AgentSession(llm=scripted) as session:
        await session.start(Assistant())
        result = await session.run(user_input="What time is it in Tokyo?")
        # The answer is the reply itself: no tool call for the turn to wait on.
        reply = result.expect.next_event().is_message(role="assistant").event().item.text_content
        assert re.fullmatch(r"It is \d\d:\d\d on \w+day, \w+ \d+ in Tokyo\.", reply)
        result.expect.no_more_events()
    assert scripted.calls == []


async def test_a_skill_that_crashes_on_the_fast_path_degrades_the_turn_not_the_session(monkeypatch):
    def broken(location: str) -> str:
        raise RuntimeError("clock database missing")

    def no_llm(ctx):
        raise AssertionError("the LLM was asked")

    scripted = ScriptedLLM(no_llm)
    async with scripted, AgentSession(llm=scripted) as session:
        await session.start(Assistant())
        with monkeypatch.context() as patch:
            patch.setattr(clock, "local_time", broken)
            result = await session.run(user_input="What time is it in Tokyo?")
        # The answer-at-once path steps aside; the tool call reports the failure and the agent says so.
        result.expect.next_event().is_function_call(name="get_time")
        result.expect.next_event().is_function_call_output(is_error=True)
        result.expect.next_event().is_message(role="assistant")
        again = await session.run(user_input="What is seven plus eight?")
        assert "15" in again.expect.next_event().is_message(role="assistant").event().item.text_content


async def test_fast_path_saves_a_note_as_a_tool_call_and_reads_notes_back_at_once(tmp_path):
    """Saving a note changes something, so it stays a tool call, which livekit runs only for a committed turn (not
    for a reply begun on a preflight transcript that the person then talks past)."""

    def no_llm(ctx):
        raise AssertionError("the LLM was asked")

    scripted = ScriptedLLM(no_llm)
    caller = CallContext(notes=NoteStore(tmp_path / "agent.db"))
    async with scripted, AgentSession(llm=scripted, userdata=caller) as session:
        await session.start(Assistant())
        result = await session.run(user_input="Please save a note that the gate code is 1234.")
        result.expect.next_event().is_function_call(name="save_note")
        result.expect.next_event().is_function_call_output(is_error=False)
        reply = result.expect.next_event().is_message(role="assistant").event().item.text_content
        assert "1234" in reply
        recalled = await session.run(user_input="Read me my notes.")
        assert "1234" in recalled.expect.next_event().is_message(role="assistant").event().item.text_content
    assert scripted.calls == []


async def test_context_stays_bounded_over_a_long_conversation(llm_path, monkeypatch):
    monkeypatch.setattr(get_settings(), "context_max_items", 8)
    scripted = ScriptedLLM(lambda ctx: f"Reply {len(ctx.items)}.")
    async with scripted, AgentSession(llm=scripted) as session:
        await session.start(Assistant())
        for n in range(15):
            await session.run(user_input=f"Message number {n}")
    seen = scripted.calls[-1]
    messages = [item for item in seen.items if item.type == "message"]
    assert messages[0].role == "system" and messages[0].text_content.startswith("You are a friendly")
    assert len(seen.items) <= 9
    assert messages[-1].text_content == "Message number 14"
    assert all(m.text_content != "Message number 3" for m in messages)


async def test_time_question_calls_the_tool_and_speaks_its_result(llm_path):
    scripted = ScriptedLLM(time_script)
    async with scripted, AgentSession(llm=scripted) as session:
        await session.start(Assistant())
        result = await session.run(user_input="What time is it in Tokyo?")
        result.expect.next_event().is_function_call(name="get_time", arguments={"location": "Tokyo"})
        output = result.expect.next_event().is_function_call_output()
        assert re.fullmatch(r"It is \d\d:\d\d on \w+day, \w+ \d+ in Tokyo\.", output.event().item.output)
        reply = result.expect.next_event().is_message(role="assistant")
        # The tool's sentence is the answer, said as it is: one LLM round, not a second one to phrase it.
        assert reply.event().item.text_content == output.event().item.output
        result.expect.no_more_events()
    assert len(scripted.calls) == 1


async def test_unknown_place_is_an_error_the_agent_recovers_from(llm_path):
    scripted = ScriptedLLM(time_script)
    async with scripted, AgentSession(llm=scripted) as session:
        await session.start(Assistant())
        result = await session.run(user_input="What time is it in Atlantis?")
        result.expect.next_event().is_function_call(name="get_time")
        failed = result.expect.next_event().is_function_call_output(is_error=True)
        assert "Atlantis" in failed.event().item.output
        # An error goes back to the LLM, which words the apology (or asks which place was meant).
        apology = result.expect.next_event().is_message(role="assistant").event().item.text_content
        assert apology.startswith("Sorry") and len(scripted.calls) == 2
        # The session goes on: the next turn is served normally.
        again = await session.run(user_input="What time is it in Paris?")
        again.expect.next_event().is_function_call(name="get_time", arguments={"location": "Paris"})


async def test_receptionist_hands_the_caller_over_to_the_specialist(llm_path):
    def script(ctx: llm.ChatContext):
        last = ctx.items[-1]
        if last.type == "function_call_output":
            return "One moment."
        if "prescription" in (last.text_content or ""):
            if ctx.items[0].text_content.startswith("You are the receptionist"):
                return ("transfer", {"reason": "prescription question"})
            return "The specialist can renew your prescription today."
        return "How can I help?"

    scripted = ScriptedLLM(script)
    transcript = Transcript()
    async with scripted, AgentSession(llm=scripted) as session:
        session.output.transcription = transcript
        await session.start(PersonaAgent(personas.get("receptionist")))
        result = await session.run(user_input="I need to renew my prescription")
        result.expect.next_event().is_function_call(name="transfer", arguments={"reason": "prescription question"})
        result.expect.next_event().is_function_call_output()
        result.expect.contains_agent_handoff(new_agent_type=PersonaAgent)
        assert session.current_agent.persona.name == "specialist"
        # The specialist has the conversation so far and its own instructions, tools and greeting.
        again = await session.run(user_input="Can you renew my prescription?")
        reply = again.expect.next_event().is_message(role="assistant").event().item.text_content
        assert reply.strip() == "The specialist can renew your prescription today."
    seen = scripted.calls[-1]
    assert "care specialist" in seen.items[0].text_content
    assert any((i.text_content or "") == "I need to renew my prescription" for i in seen.items if i.type == "message")
    assert personas.get("specialist").greeting in transcript.text
