"""Each default skill proven through the agent (text mode, scripted LLM): routing, arguments, errors."""

from __future__ import annotations

import asyncio

import pytest
from livekit.agents import AgentSession, llm

from agent.main import Assistant
from agent.settings import get_settings
from agent.skills import CALL_GOES_ON, CallContext
from agent.skills.notes import NoteStore
from tests.support.scripted_llm import ScriptedLLM


@pytest.fixture(autouse=True)
def llm_path(monkeypatch):
    """These evals test tool calls made by the LLM, so the skills fast path steps aside."""
    monkeypatch.setattr(get_settings(), "skill_fast_path", False)


def router(routes: dict[str, tuple[str, dict]]):
    """Calls the routed tool for a known request, then speaks its result or apologises for its error."""

    def script(ctx: llm.ChatContext):
        last = ctx.items[-1]
        if last.type == "function_call_output":
            return f"Sorry, {last.output}" if last.is_error else f"Done: {last.output}"
        return routes.get(last.text_content or "", "I can help with that.")

    return script


def session_for(routes, userdata: CallContext | None = None) -> tuple[ScriptedLLM, AgentSession]:
    scripted = ScriptedLLM(router(routes))
    return scripted, AgentSession(llm=scripted, userdata=userdata or CallContext())


async def test_calculator_skill():
    scripted, session = session_for({"What is 12.5 percent of 80?": ("calculate", {"expression": "12.5% of 80"})})
    async with scripted, session:
        await session.start(Assistant())
        result = await session.run(user_input="What is 12.5 percent of 80?")
        result.expect.next_event().is_function_call(name="calculate", arguments={"expression": "12.5% of 80"})
        output = result.expect.next_event().is_function_call_output(is_error=False).event().item.output
        assert output == "12.5% of 80 is 10."
        assert "is 10." in result.expect.next_event().is_message(role="assistant").event().item.text_content


async def test_unit_conversion_skill():
    args = {"value": 100, "from_unit": "fahrenheit", "to_unit": "celsius"}
    scripted, session = session_for({"Convert 100 fahrenheit to celsius": ("convert_units", args)})
    async with scripted, session:
        await session.start(Assistant())
        result = await session.run(user_input="Convert 100 fahrenheit to celsius")
        result.expect.next_event().is_function_call(name="convert_units", arguments=args)
        output = result.expect.next_event().is_function_call_output(is_error=False).event().item.output
        assert output == "100 fahrenheit is about 37.78 celsius."


async def test_failing_and_malformed_tool_calls_get_an_apology_and_the_session_goes_on():
    scripted, session = session_for(
        {
            "Divide 5 by zero": ("calculate", {"expression": "5 / 0"}),
            "Convert lots of kilos": ("convert_units", {"value": "lots", "from_unit": "kg", "to_unit": "lb"}),
            "Convert 2 kilos to meters": ("convert_units", {"value": 2, "from_unit": "kg", "to_unit": "meters"}),
            "Now 2 times 21": ("calculate", {"expression": "2 * 21"}),
        }
    )
    async with scripted, session:
        await session.start(Assistant())
        for request, reason in [
            ("Divide 5 by zero", "division by zero"),
            ("Convert lots of kilos", ""),
            ("Convert 2 kilos to meters", "can't be converted"),
        ]:
            result = await session.run(user_input=request)
            result.expect.next_event().is_function_call()
            failed = result.expect.next_event().is_function_call_output(is_error=True).event().item.output
            assert reason in failed
            reply = result.expect.next_event().is_message(role="assistant").event().item.text_content
            assert reply.startswith("Sorry")
        result = await session.run(user_input="Now 2 times 21")
        assert result.expect.next_event().is_function_call(name="calculate")
        assert result.expect.next_event().is_function_call_output(is_error=False).event().item.output == "2 * 21 is 42."


async def test_notes_are_saved_recalled_across_a_restart_and_forgotten(tmp_path):
    routes = {
        "Remember that my locker code is 4512": ("save_note", {"text": "my locker code is 4512"}),
        "What was my locker code?": ("recall_notes", {"topic": "locker"}),
        "Forget my notes": ("forget_notes", {}),
        "Yes.": ("forget_notes", {}),
    }
    path = tmp_path / "agent.db"

    async def turn(identity: str, *requests: str) -> str:
        # A new store and a new session each time: as after a restart of the worker.
        scripted, session = session_for(routes, CallContext(identity=identity, notes=NoteStore(path)))
        async with scripted, session:
            await session.start(Assistant())
            for request in requests:
                result = await session.run(user_input=request)
                result.expect.next_event().is_function_call(name=routes[request][0])
                output = result.expect.next_event().is_function_call_output(is_error=False).event().item.output
            return output

    assert (
        await turn("ana", "Remember that my locker code is 4512") == "Okay, I'll remember that: my locker code is 4512."
    )
    assert await turn("ana", "What was my locker code?") == "Your notes: 1. my locker code is 4512."
    assert await turn("bob", "What was my locker code?") == "You have no saved notes about locker."
    # Deleting is confirmed first: the request alone deletes nothing.
    assert await turn("ana", "Forget my notes") == "Delete your note and forget our earlier calls? Say yes to confirm."
    assert await turn("ana", "What was my locker code?") == "Your notes: 1. my locker code is 4512."
    assert await turn("ana", "Forget my notes", "Yes.") == "Done. I deleted 1 note and forgot our earlier calls."
    assert await turn("ana", "What was my locker code?") == "You have no saved notes about locker."


async def test_end_call_says_goodbye_and_closes_the_session():
    scripted, session = session_for({"That's all, bye!": ("end_call", {})})
    closed = asyncio.Event()
    session.on("close", lambda _ev: closed.set())
    async with scripted, session:
        await session.start(Assistant())
        result = await session.run(user_input="That's all, bye!")
        result.expect.next_event().is_function_call(name="end_call")
        result.expect.next_event().is_function_call_output(is_error=False)
        result.expect.next_event().is_message(role="assistant")
        await asyncio.wait_for(closed.wait(), 10)


async def test_end_call_without_a_goodbye_does_not_hang_up():
    # The packaged 1.5B model once called end_call on "Hi mayor, how are you doing today?" (Whisper's "Hi there").
    greeting = "Hi mayor, how are you doing today?"
    scripted, session = session_for({greeting: ("end_call", {})})
    closed = asyncio.Event()
    session.on("close", lambda _ev: closed.set())
    async with scripted, session:
        await session.start(Assistant())
        result = await session.run(user_input=greeting)
        result.expect.next_event().is_function_call(name="end_call")
        # Not an error (the agent would apologise): the LLM is told to carry on and answer.
        output = result.expect.next_event().is_function_call_output(is_error=False).event().item.output
        assert output == CALL_GOES_ON
        result.expect.next_event().is_message(role="assistant")
        await asyncio.sleep(1.0)
        assert not closed.is_set()
        # The call goes on: the next request is answered.
        result = await session.run(user_input="What can you do?")
        assert result.expect.next_event().is_message(role="assistant").event().item.text_content


async def test_time_here_when_the_llm_names_no_place(monkeypatch):
    """The 1.5B at times calls get_time with no place ("<get_time>get_time</get_time>" for "What is the day
    today?"): that is the time where the agent is (HOME_TIMEZONE)."""
    monkeypatch.setattr(get_settings(), "home_timezone", "Asia/Tokyo")
    scripted, session = session_for({"What is the day today?": ("get_time", {})})
    async with scripted, session:
        await session.start(Assistant())
        result = await session.run(user_input="What is the day today?")
        result.expect.next_event().is_function_call(name="get_time")
        output = result.expect.next_event().is_function_call_output(is_error=False).event().item.output
        assert output.endswith("in Tokyo.")
