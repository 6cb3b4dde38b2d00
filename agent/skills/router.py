"""The fast path: requests a parser can serve exactly become a tool call with no LLM round trip.

Only unambiguous phrasings match, and only when the arguments check out (a known place, arithmetic that
evaluates, units that convert); everything else falls through to the LLM. After a routed call the tool's
own sentence is spoken as the answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from agent.skills import calculator, clock, units


@dataclass
class Route:
    tool: str
    arguments: dict[str, Any]


def _clean(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip()).strip(" .!?")


HERE_AND_NOW = re.compile(
    r"^(?:what time is it|what(?:'s| is) the (?:time|date)|what day is (?:it|today)|what(?:'s| is) today's date"
    r"|what(?:'s| is) the date today|what date is it)(?: today| now| right now)?$"
)


def _time(text: str, home: str = "UTC") -> Route | None:
    if HERE_AND_NOW.match(text):
        return Route("get_time", {"location": home})
    match = re.search(
        r"\b(?:time|date|day)\b(?: is it)?(?: right now| now)? in ([a-z][a-z .'-]*?)(?: right now| now)?$", text
    )
    if not match or not re.search(r"\b(what|what's|tell me|which)\b", text):
        return None
    place = match.group(1).strip()
    try:
        clock.find_zone(place)
    except clock.UnknownPlace:
        return None
    return Route("get_time", {"location": place.title()})


def _calculate(text: str) -> Route | None:
    match = re.match(r"^(?:what(?:'s| is)|how much is|calculate|compute|work out)\s+(.+)$", text)
    if not match or not re.search(r"\d", match.group(1)):
        return None
    expression = match.group(1)
    try:
        calculator.evaluate(expression)
    except calculator.CalculationError:
        return None
    return Route("calculate", {"expression": expression})


ONES = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen"
SMALL = {w: n for n, w in enumerate([*ONES.split(" "), "seventeen", "eighteen", "nineteen"])}
DECADES = "twenty thirty forty fifty sixty seventy eighty ninety"
TENS = {w: 10 * n for n, w in enumerate(DECADES.split(" "), start=2)}
SCALES = {"hundred": 100, "thousand": 1000, "million": 1_000_000}


def spoken_numbers(text: str) -> str:
    """'one hundred divided by eight' -> '100 divided by 8' (STT often spells out numbers)."""
    out: list[str] = []
    run: list[str] = []

    def flush() -> None:
        if run:
            total = current = 0
            for word in run:
                if word == "hundred":
                    current = max(current, 1) * 100
                elif word in SCALES:
                    total, current = total + max(current, 1) * SCALES[word], 0
                else:
                    current += SMALL.get(word, 0) + TENS.get(word, 0)
            out.append(str(total + current))
            run.clear()

    for word in text.split(" "):
        parts = word.split("-")
        if word and all(p in SMALL or p in TENS or p in SCALES for p in parts):
            for part in parts:
                if run and not _continues(run[-1], part):
                    flush()
                run.append(part)
        elif word == "and" and run and run[-1] in SCALES:
            continue  # "one hundred and five"
        else:
            flush()
            out.append(word)
    flush()
    return " ".join(out)


def _continues(previous: str, word: str) -> bool:
    """Whether `word` extends the number so far ("twenty" "one") rather than starting another ("four" "five")."""
    if word in SCALES or previous in SCALES:
        return True
    return previous in TENS and 0 < SMALL.get(word, 0) < 10


NUMBER = r"(-?\d+(?:\.\d+)?)"
UNIT = r"((?:degrees? )?[a-z][a-z /]*?)"


def _convert(text: str) -> Route | None:
    forms = [
        (rf"^(?:convert |what(?:'s| is) |how much is )?{NUMBER} ?{UNIT} (?:to|into|in) {UNIT}$", (1, 2, 3)),
        (rf"^how many {UNIT} (?:are |is )?(?:there )?in {NUMBER} ?{UNIT}$", (2, 3, 1)),
        (rf"^how many {UNIT} (?:is|are) {NUMBER} ?{UNIT}$", (2, 3, 1)),
        (rf"^how many {UNIT} (?:are |is )?(?:there )?in (a|an|one) {UNIT}$", (2, 3, 1)),
    ]
    for pattern, (v, f, t) in forms:
        if match := re.match(pattern, text):
            amount = match.group(v)
            value = 1.0 if amount in ("a", "an", "one") else float(amount)
            source, target = match.group(f).strip(), match.group(t).strip()
            try:
                units.convert(value, source, target)
            except units.ConversionError:
                return None
            if value.is_integer():
                value = int(value)
            return Route("convert_units", {"value": value, "from_unit": source, "to_unit": target})
    return None


def _notes(text: str) -> Route | None:
    # "same a note" / "safe a note": how Whisper often hears "save a note"; the 1.5B LLM then claimed to have saved
    # it without calling the tool.
    saying = r"(?:remember|make a note|take a note|(?:save|same|safe) a note)"
    if match := re.match(rf"^(?:please,? )?{saying}[,:]?(?: that,?)? (.{{3,}})$", text):
        return Route("save_note", {"text": match.group(1)})
    if re.search(r"\b(forget|delete|erase|clear)\b.*\b(my notes|all notes|the notes|everything i told you)\b", text):
        return Route("forget_notes", {})
    if re.search(
        r"\b(my notes|what did i ask you to remember|what did i tell you to remember|read me my notes)\b", text
    ):
        return Route("recall_notes", {"topic": ""})
    return None


def _goodbye(text: str) -> Route | None:
    if re.search(
        r"(^|\b(?:ok|okay|thanks|thank you|that's all|that is all)\b.*)\b(good ?bye|bye(?: bye)?)$", text
    ) or re.match(r"^(?:please )?(?:hang up|end (?:the|this) call)$", text):
        return Route("end_call", {})
    return None


def _transfer(text: str) -> Route | None:
    """ "Transfer me to the operator", "can I speak to sales": the transfer tool checks the name against its list."""
    who = r"(?:the |a |an )?([a-z][a-z ]{0,30}?)(?:,? please)?$"
    match = re.match(
        rf"^(?:(?:please|can you|could you) )?(?:transfer|connect|put) me (?:through )?to {who}"
        rf"|^(?:can|could|may) i (?:please )?(?:speak|talk) (?:to|with) {who}",
        text,
    )
    if not match:
        return None
    return Route("transfer_call", {"destination": (match.group(1) or match.group(2)).strip()})


PARSERS = {
    "get_time": _time,
    "convert_units": _convert,
    "calculate": _calculate,
    "save_note": _notes,
    "end_call": _goodbye,
    "transfer_call": _transfer,
}


def route(utterance: str, enabled: set[str], home: str = "UTC") -> Route | None:
    """The tool call that serves this request exactly, or None to let the LLM handle it.

    `home` is the time zone of "what time is it" without a place."""
    text = _clean(utterance.lower())
    if not text or len(text) > 200:
        return None
    numeric = spoken_numbers(text)
    for name, parse in PARSERS.items():
        if name == "get_time":
            found = _time(text, home)
        else:
            found = parse(numeric if name in ("calculate", "convert_units") else text)
        if found and found.tool == "save_note" and utterance.strip().endswith("?"):
            found = None  # "Remember when we met?" is a question, not something to note
        if name in enabled and found and found.tool in enabled:
            return found
    return None
