"""The intent layer understands skill requests in words the router's patterns do not know, reads their slots
exactly, declines what no skill does, and leaves look-alikes and anything unsure to the LLM."""

from __future__ import annotations

import pytest

from agent.skills.intents import Intents

pytestmark = pytest.mark.models

ENABLED = {"get_time", "calculate", "convert_units", "recall_notes", "save_note", "forget_notes", "end_call"}


@pytest.fixture(scope="module")
def intents() -> Intents:
    return Intents()


@pytest.mark.parametrize(
    ("said", "tool", "arguments"),
    [
        ("Hey, any idea what the time is in Lisbon at the moment?", "get_time", {"location": "Lisbon"}),
        ("So, um, which weekday are we on today?", "get_time", {"location": "Europe/Oslo"}),
        ("Do you happen to know the current time in Germany?", "get_time", {"location": "Germany"}),
        ("Could you figure out nineteen times forty two for me?", "calculate", {"expression": "19 * 42"}),
        ("I need a hand with 360 divided by 8.", "calculate", {"expression": "360 / 8"}),
        ("Roughly how many kilometres is twenty six miles?", "convert_units",
         {"value": 26, "from_unit": "miles", "to_unit": "kilometres"}),
        ("Hmm, what's 180 centimetres in feet?", "convert_units",
         {"value": 180, "from_unit": "centimetres", "to_unit": "feet"}),
        ("Could you go through the notes I saved?", "recall_notes", {"topic": ""}),
        # Only asks: the tool deletes nothing until the next words are a yes.
        ("Could you wipe out all the notes you kept for me?", "forget_notes", {}),
        ("Um, what's two and a half feet in centimetres?", "convert_units",
         {"value": 2.5, "from_unit": "feet", "to_unit": "centimetres"}),  # "um" is no micrometre
        ("What is 500g in ounces?", "convert_units", {"value": 500, "from_unit": "g", "to_unit": "ounces"}),
        ("Okay, quick one, 320 times 3.", "calculate", {"expression": "320 * 3"}),  # "one" is no operand
    ],
)  # fmt: skip
def test_requests_in_other_words_become_the_right_call(intents, said, tool, arguments):
    understood = intents.understand(said, ENABLED, "Europe/Oslo")
    assert understood is not None and understood.route is not None, said
    assert (understood.route.tool, understood.route.arguments) == (tool, arguments)


@pytest.mark.parametrize(
    "said",
    [
        "What's a nice time of year to go to Iceland?",  # time, but no clock question
        "How do people tell time without a watch?",
        "What's the date of the next full moon?",  # not now: the clock cannot answer it
        "What time is it in Narnia?",  # a place the clock does not know: the LLM says so
        "What time does the bakery open tomorrow?",
        "Why do we have leap years?",
        "Can you remember things I tell you?",  # about notes, not a request to read them
        "What does the word 'memo' mean?",
        "Should I clear my notes before the trip?",  # advice, not a request
        "Don't delete my notes.",
        # Two requests in one: a single call would answer half of it.
        "What's the time in Tokyo, and what's 9 times 7?",
        "Tell me the time in Madrid, then the time in Chicago.",
    ],
)
def test_look_alikes_and_unsure_requests_go_to_the_llm(intents, said):
    understood = intents.understand(said, ENABLED, "UTC")
    assert understood is None or understood.route is None and understood.decline is None, understood


@pytest.mark.parametrize(
    ("said", "what"),
    [
        ("Could you grab me a reservation for dinner on Saturday?", "book"),
        ("Please send an email to the landlord about the rent.", "send messages"),
        ("Is it going to snow in Denver tonight?", "weather"),
    ],
)
def test_what_no_skill_does_is_declined_without_tool_talk(intents, said, what):
    understood = intents.understand(said, ENABLED, "UTC")
    assert understood is not None and understood.decline, said
    assert what in understood.decline and understood.decline.startswith("Sorry, I can't")


def test_a_skill_that_is_not_enabled_is_left_to_the_llm(intents):
    assert intents.understand("Could you figure out nineteen times forty two for me?", {"get_time"}, "UTC") is None
