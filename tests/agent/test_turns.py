"""TURN_DETECTION=text: which transcripts hold the turn open (in a session: tests/agent/test_turn_detector.py)."""

from __future__ import annotations

import pytest
from livekit.agents import llm

from agent.turns import THRESHOLD, TextTurnDetector, unfinished


@pytest.mark.parametrize(
    "heard",
    [
        "I would like to book a table at",
        "Could you book me a table for?",  # Whisper often closes a fragment with a question mark
        "I want to buy milk, eggs and",
        "Remind me to call my",
        "What is the weather like in",
        "So, um...",
        "The weather in Paris,",
        "Set an alarm for",
    ],
)
def test_a_transcript_that_stops_mid_sentence_holds_the_turn(heard):
    assert unfinished(heard)


@pytest.mark.parametrize(
    "heard",
    [
        "What time is it in Tokyo?",
        "Where are you from?",
        "What is it about?",
        "Who are you talking to?",
        "Please add milk, eggs and bread to my shopping list.",
        "I need a taxi to the airport at 6",
        "Set an alarm for 7.",
        "What is this?",
        "Call her.",
        "I think so.",
        "Thanks",
        "",
    ],
)
def test_a_finished_request_ends_the_turn(heard):
    assert not unfinished(heard)


async def test_the_detector_scores_the_newest_user_message_for_livekit():
    detector = TextTurnDetector()
    ctx = llm.ChatContext()
    ctx.add_message(role="user", content="Book me a table for")
    ctx.add_message(role="assistant", content="Sure.")
    ctx.add_message(role="user", content="Could you book me a table for")
    assert await detector.predict_end_of_turn(ctx) < await detector.unlikely_threshold("en") == THRESHOLD
    ctx.add_message(role="user", content="What time is it in Tokyo?")
    assert await detector.predict_end_of_turn(ctx) >= THRESHOLD
    assert await detector.supports_language("en") and not await detector.supports_language("fr")
