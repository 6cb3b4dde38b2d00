"""The spoken-request benchmark's set, split and judges (bench/requests), without starting the stack."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bench.requests import checks, split
from bench.requests.__main__ import first_calls, warm_calls
from bench.requests.spec import CATEGORIES, HALVES, SKILLS, load, raw_half, voice_for


def all_requests():
    return [r for half in HALVES for r in load(half)]


def test_the_set_has_at_least_200_requests_with_unique_ids():
    requests = all_requests()
    assert len(requests) >= 200
    assert len({r.id for r in requests}) == len(requests)
    assert {r.category for r in requests} == set(CATEGORIES)
    assert sum(bool(r.tools) for r in requests) >= 100  # skill requests
    assert sum(r.checkable for r in requests) >= 180


def test_the_split_is_the_seeded_one_and_disjoint():
    tuning, held_out = split.split(split.pooled())
    assert tuning == raw_half("tuning")
    assert held_out == raw_half("held-out")
    assert not {r["id"] for r in tuning} & {r["id"] for r in held_out}
    assert split.split(split.pooled(), seed=20) != (tuning, held_out)


@pytest.mark.parametrize("half", list(HALVES))
def test_each_half_has_every_skill_and_category(half):
    requests = load(half)
    assert {tool for r in requests for tool in r.tools} == set(SKILLS)
    assert {r.category for r in requests} == set(CATEGORIES)
    assert len(requests) >= 90


def test_every_check_is_known_and_computes():
    now = datetime(2024, 3, 5, 14, 5, tzinfo=UTC)
    for request in all_requests():
        for check in request.checks:
            out = checks.Outcome("", now, now, seeded=[{"text": "x", "keys": ["x"]}])
            name, _ = checks.content(check, out)  # raises on an unknown check, zone or unit
            assert name in check


def test_voices_are_fixed_by_id_and_varied():
    voices = [voice_for(r.id) for r in all_requests()]
    assert voice_for("time-01") == voice_for("time-01")
    assert {v.engine for v in voices} == {"hibari", "espeak"}
    assert len({v.name for v in voices if v.engine == "espeak"}) > 1
    assert all(0.85 <= v.speed <= 1.15 for v in voices if v.engine == "hibari")
    assert all(130 <= v.speed <= 190 for v in voices if v.engine == "espeak")


def test_calls_cover_each_request_once_and_notes_go_to_returning_callers():
    requests = load("tuning")
    for plan in (first_calls(requests), warm_calls(requests)):
        assert sorted(r.id for _, call in plan for r in call) == sorted(r.id for r in requests)
        assert all(returning for returning, call in plan if any(r.returning for r in call))
        assert all(not r.ends_call for _, call in plan for r in call[:-1])  # a goodbye ends its call
    assert {returning for returning, _ in first_calls(requests)} == {True, False}


def test_time_check_accepts_the_time_there_and_rejects_another_hour():
    now = datetime(2024, 3, 5, 14, 5, tzinfo=UTC)  # 19:50 in Kathmandu
    for reply in ("It is 19:50 on Tuesday in Kathmandu.", "It's 7:50 PM.", "It is 7:51 p.m.", "seven fifty PM"):
        assert checks.check_time(reply, "Asia/Kathmandu", now, now) is None, reply
    for reply in ("It is 18:50 in Kathmandu.", "It's 7:50 AM.", "It is 19:05.", "I don't know."):
        assert checks.check_time(reply, "Asia/Kathmandu", now, now) is not None, reply
    later = now + timedelta(seconds=40)
    assert checks.check_time("It is 3:07 PM in Vienna.", "Europe/Vienna", now, later) is None


def test_date_check_wants_the_day_there():
    now = datetime(2024, 3, 5, 20, 0, tzinfo=UTC)  # already Wednesday the 6th in Kathmandu
    zone = "Asia/Kathmandu"
    assert checks.check_date("Today is Wednesday, March 6.", zone, now, now, "date") is None
    assert checks.check_date("It is the sixth of March.", zone, now, now, "date") is None
    assert checks.check_date("Today is March 5.", zone, now, now, "date") is not None
    assert checks.check_date("It's Wednesday.", zone, now, now, "weekday") is None
    assert checks.check_date("It's Tuesday.", zone, now, now, "weekday") is not None


@pytest.mark.parametrize(
    ("reply", "expected", "ok"),
    [
        ("12 times 14 is 168.", "12*14", True),
        ("That's one hundred and sixty-eight.", "12*14", True),
        ("It comes to 170.", "12*14", False),
        ("7 divided by 4 is one point seven five.", "7/4", True),
        ("About 1.75", "7/4", True),
        ("It's 2.", "7/4", False),
        ("The answer is 4,561.", "4561", True),
        ("Minus twelve.", "-12", True),
        ("Twelve.", "-12", False),
        ("One third is about 0.33", "1/3", True),
    ],
)
def test_number_check(reply, expected, ok):
    assert (checks.has_number(reply, [checks.arithmetic(expected)], rel=0.005) is None) == ok


def test_conversion_check_computes_the_value_within_two_percent():
    kilometers = checks.converted(10, "mile", "kilometer")
    assert kilometers == pytest.approx(16.09, abs=0.01)
    assert checks.has_number("Ten miles is about 16.1 kilometers.", [kilometers], rel=0.02) is None
    assert checks.has_number("Ten miles is 18 kilometers.", [kilometers], rel=0.02) is not None
    celsius = checks.converted(70, "degF", "degC")
    assert checks.has_number("That's about 21 degrees Celsius.", [celsius], rel=0.02, abs_tol=0.6) is None


@pytest.mark.parametrize(
    "reply",
    [
        "The day today is <get_time>get_time</get_time>.",
        "{{get_time}}",
        "call `calculate` with 4 * 5",
        "**Sure!** It is noon.",
        "I will use the save_note function.",
        'Tool call: {"name": "recall_notes"}',
    ],
)
def test_markup_is_caught(reply):
    assert checks.markup(reply) is not None


@pytest.mark.parametrize("reply", ["It is 3:05 PM in Vienna.", "Twelve times four is 48.", "You're welcome!"])
def test_plain_speech_is_not_markup(reply):
    assert checks.markup(reply) is None


def outcome(reply: str, **kwargs) -> checks.Outcome:
    now = datetime(2024, 3, 5, 14, 5, tzinfo=UTC)
    return checks.Outcome(reply, now, now, **kwargs)


def test_non_answers_and_unkept_claims():
    assert checks.non_answer("Sure, I'll remind you of the notes.") is not None
    assert checks.non_answer("Let me check.") is not None
    assert checks.non_answer("Let me check: it is 3:05 PM in Vienna.") is None
    assert checks.claimed_not_done("Okay, I've saved that note.", outcome("")) is not None
    assert checks.claimed_not_done("Okay, I've saved that note.", outcome("", notes_added=["x"])) is None
    assert checks.claimed_not_done("Done, I've booked your table.", outcome("")) is not None
    assert checks.claimed_not_done("Sorry, I can't book tables.", outcome("")) is None


def test_judge_runs_the_request_checks_and_the_universal_ones():
    seeded = [{"text": "The garage door code is 4561.", "keys": ["garage", "4561"]}]
    right = checks.judge([{"recall": "any"}], outcome("Your note: the garage code is 4 5 6 1.", seeded=seeded))
    assert right.right and "recall" in right.passed
    wrong = checks.judge([{"recall": "any"}], outcome("Sure, I'll remind you of the notes.", seeded=seeded))
    assert set(wrong.failed) == {"recall", "non_answer"}
    saved = checks.judge([{"saved": ["locker", "27"]}], outcome("Noted.", notes_added=["my locker number is 27"]))
    assert saved.right
    declined = checks.judge([{"decline": True}], outcome("Sorry, I can't book a massage.", tools=[]))
    assert declined.right
    booked = checks.judge([{"decline": True}], outcome("I've booked your massage.", tools=[]))
    assert {"decline", "claimed"} <= set(booked.failed)
    tooled = checks.judge([{"no_tool": True}], outcome("Au revoir!", tools=["end_call"], ended=True))
    assert {"no_tool", "ended_unasked"} <= set(tooled.failed)
    bye = checks.judge([{"ended": True}], outcome("Goodbye!", ended=True), ends_call=True)
    assert bye.right
    assert checks.judge([], outcome("")).failed["answered"] == "no answer"


def test_path_and_tools_come_from_the_waterfall_records():
    assert checks.path_of([{"turn": 1}]) == ("?", None)
    assert checks.path_of([{"path": "fast", "tools": ["get_time"]}]) == ("fast", ["get_time"])
    assert checks.path_of([{"path": "llm", "tools": []}, {"path": "llm_tool", "tools": ["calculate"]}]) == (
        "llm_tool",
        ["calculate"],
    )
