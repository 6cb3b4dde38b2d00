"""Behavioural evals judged by a real LLM. They run only when one is configured:

    EVAL_LLM_BASE_URL=https://api.openai.com/v1 EVAL_LLM_MODEL=gpt-4o-mini EVAL_LLM_API_KEY=... \\
        uv run pytest tests/agent/test_judge_evals.py                        # any OpenAI-compatible server

The agent under test uses the same LLM, with the skills fast path off, so these measure the model's own
tool use and manners. (The packaged 1.5B model cannot be the judge: it does not return the judge's verdict.)
"""

from __future__ import annotations

import os

import pytest
from livekit.agents import AgentSession, llm
from livekit.plugins import openai

from agent.main import Assistant
from agent.settings import get_settings

pytestmark = pytest.mark.skipif(
    not os.environ.get("EVAL_LLM_BASE_URL"), reason="judge evals need an LLM: set EVAL_LLM_BASE_URL (see docstring)"
)


@pytest.fixture(scope="module")
def eval_llm() -> llm.LLM:
    return openai.LLM(
        base_url=os.environ["EVAL_LLM_BASE_URL"],
        model=os.environ.get("EVAL_LLM_MODEL", "gpt-4o-mini"),
        api_key=os.environ.get("EVAL_LLM_API_KEY", "no-key"),
    )


@pytest.fixture(autouse=True)
def llm_path(monkeypatch):
    monkeypatch.setattr(get_settings(), "skill_fast_path", False)


async def test_small_talk_is_short_and_friendly(eval_llm):
    async with AgentSession(llm=eval_llm) as session:
        await session.start(Assistant())
        result = await session.run(user_input="Hi there, how are you today?")
        await (
            result.expect.next_event()
            .is_message(role="assistant")
            .judge(eval_llm, intent="replies in a friendly way and is brief (one or two sentences)")
        )


async def test_time_question_uses_the_tool_and_answers_with_it(eval_llm):
    async with AgentSession(llm=eval_llm) as session:
        await session.start(Assistant())
        result = await session.run(user_input="What time is it in Tokyo right now?")
        result.expect.next_event().is_function_call(name="get_time")
        result.expect.next_event().is_function_call_output()
        await (
            result.expect.next_event()
            .is_message(role="assistant")
            .judge(eval_llm, intent="tells the user the current time in Tokyo")
        )


async def test_unknown_place_gets_an_apology(eval_llm):
    async with AgentSession(llm=eval_llm) as session:
        await session.start(Assistant())
        result = await session.run(user_input="What time is it in the city of Atlantis?")
        result.expect.skip_next_event_if(type="function_call")
        result.expect.skip_next_event_if(type="function_call_output")
        await (
            result.expect.next_event()
            .is_message(role="assistant")
            .judge(eval_llm, intent="says it cannot tell the time for that place, politely")
        )
