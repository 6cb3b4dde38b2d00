"""What the skills compute, without a session: arithmetic, units, notes."""

from __future__ import annotations

import pytest

from agent.skills import UnknownSkill, calculator, check, tools_for, units
from agent.skills.notes import NoteStore


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("2 + 3 * 4", 14),
        ("(2 + 3) * 4", 20),
        ("12.5% of 80", 10),
        ("15 percent of 240", 36),
        ("3 times 7", 21),
        ("2^10", 1024),
        ("9 squared", 81),
        ("square root of 144", 12),
        ("sqrt(2) * sqrt(2)", 2.0000000000000004),
        ("1,250 divided by 5", 250),
        ("7 % 3", 1),
        ("-(4 - 10)", 6),
        ("12 ÷ 4 × 3", 9),
        ("what is 6 minus 8?", -2),
        ("6 apples", None),
    ],
)
def test_calculator_computes(expression, value):
    if value is None:
        with pytest.raises(calculator.CalculationError):
            calculator.evaluate(expression)
    else:
        assert calculator.evaluate(expression) == pytest.approx(value)


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("1 / 0", "division by zero"),
        ("2 ** 100000", "exponent"),
        ("__import__('os').system('true')", "only numbers"),
        ("open('/etc/passwd')", "only numbers"),
        ("x + 1", "only numbers"),
        ("9" * 300, "too long"),
        ("", "no expression"),
        ("sqrt(-1)", "undefined"),
        ("10 ** 60 * 10 ** 60", "out of range"),
    ],
)
def test_calculator_refuses_safely(expression, reason):
    with pytest.raises(calculator.CalculationError, match=reason):
        calculator.evaluate(expression)


def test_spoken_numbers():
    assert calculator.spoken_number(10.0) == "10"
    assert calculator.spoken_number(1234567) == "1,234,567"
    # Every digit is a word when spoken: what is said is rounded, and says so.
    assert calculator.spoken_number(1 / 3) == "about 0.3333"
    assert calculator.spoken_number(35 / 3) == "about 11.67"
    assert calculator.spoken_number(2.5) == "2.5"
    assert calculator.spoken_number(12345.678) == "about 12,345.68"


@pytest.mark.parametrize(
    ("value", "source", "target", "expected"),
    [
        (100, "fahrenheit", "celsius", 37.7778),
        (0, "degrees celsius", "degrees fahrenheit", 32),
        (300, "kelvin", "celsius", 26.85),
        (5, "miles", "kilometers", 8.04672),
        (60, "mph", "km/h", 96.5606),
        (2, "pounds", "kg", 0.907185),
        (1, "gallon", "liters", 3.78541),
        (90, "minutes", "hours", 1.5),
        (1, "gigabyte", "megabytes", 1000),
        (6, "feet", "meters", 1.8288),
    ],
)
def test_unit_conversions(value, source, target, expected):
    assert units.convert(value, source, target) == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize(("source", "target"), [("kg", "meters"), ("blorps", "meters"), ("celsius", "seconds")])
def test_impossible_conversions_are_refused(source, target):
    with pytest.raises(units.ConversionError):
        units.convert(1, source, target)


def test_notes_are_per_identity_and_survive_a_new_store(tmp_path):
    path = tmp_path / "agent.db"
    store = NoteStore(path)
    store.add("ana", "locker code is 4512")
    store.add("ana", "call the dentist on Friday")
    store.add("bob", "buy milk")
    again = NoteStore(path)  # as after a restart of the worker
    assert again.find("ana") == ["locker code is 4512", "call the dentist on Friday"]
    assert again.find("ana", "dentist appointment") == ["call the dentist on Friday"]
    assert again.find("bob") == ["buy milk"]
    assert again.count("ana") == 2 and again.count("bob") == 1 and again.count("carl") == 0
    assert again.forget("ana") == 2
    assert again.find("ana") == [] and again.find("bob") == ["buy milk"]
    with pytest.raises(ValueError):
        again.add("ana", "   ")


def test_registry_enables_skills_by_name():
    names = [getattr(t, "id", "") for t in tools_for(["calculator", "notes"])]
    assert names == ["calculate", "save_note", "recall_notes", "forget_notes"]
    with pytest.raises(UnknownSkill, match="unknown skill 'weather'.*known: time, calculator"):
        check(["time", "weather"])
