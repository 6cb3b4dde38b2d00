"""Judging a reply by its content: the request's own checks, computed when it is asked (the time where it names, the
arithmetic, the conversion, the notes in the store), and the checks every reply gets (an answer, no markup or tool
syntax voiced, no announcement in place of the answer, no action claimed that was not done)."""

from __future__ import annotations

import ast
import operator
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pint

TOOL_NAMES = ("get_time", "calculate", "convert_units", "save_note", "recall_notes", "forget_notes", "end_call")


@dataclass
class Outcome:
    """What happened on one turn, as the benchmark saw it."""

    reply: str
    asked_at: datetime  # the end of the request (aware)
    answered_at: datetime  # the end of the reply (aware)
    home: str = "UTC"  # the agent's home time zone
    tools: list[str] | None = None  # from the waterfall record; None when the agent does not say
    notes_added: list[str] = field(default_factory=list)  # notes the caller has after the turn and not before
    notes_removed: int = 0
    ended: bool = False  # the agent ended the call (left the room, or marked it ended)
    seeded: list[dict] = field(default_factory=list)  # the caller's notes before the call ({"text", "keys"})


# ---- numbers, written or spoken

_SMALL = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen"
SMALL = {w: n for n, w in enumerate([*_SMALL.split(), "seventeen", "eighteen", "nineteen"])}
_TENS = "twenty thirty forty fifty sixty seventy eighty ninety"
TENS = {w: 10 * n for n, w in enumerate(_TENS.split(), start=2)}
SCALES = {"hundred": 100, "thousand": 1000, "million": 1_000_000}
_WORD = "|".join(sorted([*SMALL, *TENS, *SCALES], key=len, reverse=True))
_RUN = re.compile(rf"\b(?:a[\s-]+(?=(?:hundred|thousand|million)\b))?(?:{_WORD})(?:(?:[\s-]+and)?[\s-]+(?:{_WORD}))*\b")


def _run_numbers(words: list[str]) -> list[int]:
    """'one hundred and sixty eight' -> [168]; 'four five six one' -> [4, 5, 6, 1]."""
    numbers: list[int] = []
    total = current = 0
    previous = None
    for word in words:
        if word == "and":
            continue
        if previous is not None and not (
            word in SCALES or previous in SCALES or (previous in TENS and 0 < SMALL.get(word, 0) < 10)
        ):
            numbers.append(total + current)
            total = current = 0
        if word == "hundred":
            current = max(current, 1) * 100
        elif word in SCALES:
            total, current = total + max(current, 1) * SCALES[word], 0
        else:
            current += SMALL.get(word, 0) + TENS.get(word, 0)
        previous = word
    numbers.append(total + current)
    return numbers


def spoken_to_digits(text: str) -> str:
    """Number words as digits, the rest as it was: 'two point seven five' -> '2.75', 'minus twelve' -> '-12'."""
    text = text.lower().replace("\u2019", "'")

    def digits(match: re.Match) -> str:
        words = re.split(r"[\s-]+", match.group(0))
        return " ".join(str(n) for n in _run_numbers(["one" if w == "a" else w for w in words]))

    text = _RUN.sub(digits, text)
    text = re.sub(r"\b(\d+) point ((?:\d\b ?)+)", lambda m: f"{m.group(1)}.{''.join(m.group(2).split())}", text)
    text = re.sub(r"\b(\d+) and a half\b", lambda m: f"{int(m.group(1)) + 0.5:g}", text)
    text = re.sub(r"\b(?:minus|negative) (?=\d)", "-", text)
    return re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)


def numbers_in(text: str) -> list[tuple[float, int]]:
    """Every number in the text, with its count of decimals."""
    found = re.findall(r"(?<![\d.])-?\d+(?:\.\d+)?", spoken_to_digits(text))
    return [(float(n), len(n.split(".")[1]) if "." in n else 0) for n in found]


_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}
_OPS |= {ast.Pow: operator.pow, ast.USub: operator.neg, ast.UAdd: operator.pos}


def arithmetic(expression: str) -> float:
    """The value of a request's own arithmetic ('(3+4)*2', '2**0.5'): numbers and + - * / ** only."""

    def value(node: ast.AST) -> float:
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](value(node.left), value(node.right))
        if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](value(node.operand))
        raise ValueError(f"not arithmetic: {expression!r}")

    return float(value(ast.parse(str(expression), mode="eval").body))


def close(got: float, decimals: int, expected: float, rel: float, abs_tol: float = 0.0) -> bool:
    """Right within `rel` (or `abs_tol`), or `expected` rounded to the decimals said."""
    diff = abs(got - expected)
    return diff <= rel * abs(expected) + abs_tol + 1e-9 or (decimals > 0 and diff <= 0.5 * 10**-decimals + 1e-9)


def has_number(reply: str, expected: list[float], rel: float, abs_tol: float = 0.0) -> str | None:
    found = numbers_in(reply)
    if any(close(got, dec, exp, rel, abs_tol) for got, dec in found for exp in expected):
        return None
    said = ", ".join(f"{got:g}" for got, _ in found) or "none"
    return f"expected {' or '.join(f'{e:.4g}' for e in expected)}; numbers said: {said}"


_UNITS: pint.UnitRegistry | None = None


def converted(value: float, source: str, target: str) -> float:
    global _UNITS
    if _UNITS is None:
        _UNITS = pint.UnitRegistry(autoconvert_offset_to_baseunit=True)
    return float(_UNITS.Quantity(value, source).to(target).magnitude)


# ---- the time and the date where the request names


def _minutes(zone: str, start: datetime, end: datetime, slack_min: int = 2) -> list[datetime]:
    """Every local minute from `slack_min` before the request to `slack_min` after the reply."""
    tz = ZoneInfo(zone)
    first = (start - timedelta(minutes=slack_min)).astimezone(tz).replace(second=0, microsecond=0)
    last = (end + timedelta(minutes=slack_min)).astimezone(tz)
    out = []
    while first <= last:
        out.append(first)
        first += timedelta(minutes=1)
    return out


_AMPM = r"\s*([ap])\.?\s?m\b\.?"
_CLOCKS = [
    re.compile(rf"\b(\d{{1,2}}):(\d{{2}})\b(?:{_AMPM})?"),  # 15:05, 3:05 pm
    re.compile(rf"(?<![:\d])\b(\d{{1,2}})(?: (\d{{2}}))?{_AMPM}"),  # 3 pm, 3 05 pm (from "three oh five pm")
    re.compile(r"\b(\d{1,2})()() o'?clock\b"),
]


def times_in(text: str) -> list[tuple[int, int, str | None]]:
    """(hour, minute, 'a'|'p'|None) for each time of day said."""
    text = spoken_to_digits(text)
    text = re.sub(r"\b(\d{1,2}) (?:oh|o) (\d)\b", r"\1 0\2", text)
    text = re.sub(r"\bnoon\b|\bmidday\b", "12:00", text)
    text = re.sub(r"\bmidnight\b", "0:00", text)
    found = []
    for pattern in _CLOCKS:
        for match in pattern.finditer(text):
            hour, minute, half = match.group(1), match.group(2), match.group(3)
            found.append((int(hour), int(minute or 0), half.lower() if half else None))
    offsets = {"quarter": 15, "half": 30}
    for match in re.finditer(r"\b(quarter|half|\d{1,2})(?: minutes?)? (past|after|to) (\d{1,2})\b", text):
        amount = offsets.get(match.group(1)) or int(match.group(1))
        hour = int(match.group(3))
        found.append((hour, amount, None) if match.group(2) != "to" else ((hour - 1) % 24, 60 - amount, None))
    return found


def _same_clock(said: tuple[int, int, str | None], moment: datetime) -> bool:
    hour, minute, half = said
    if minute != moment.minute:
        return False
    if half is not None:
        return 1 <= hour <= 12 and hour % 12 == moment.hour % 12 and (half == "p") == (moment.hour >= 12)
    return hour == moment.hour or (1 <= hour <= 12 and hour % 12 == moment.hour % 12)


def check_time(reply: str, zone: str, start: datetime, end: datetime) -> str | None:
    minutes = _minutes(zone, start, end)
    said = times_in(reply)
    if any(_same_clock(s, m) for s in said for m in minutes):
        return None
    heard = ", ".join(f"{h}:{m:02d}{(' ' + x + 'm') if x else ''}" for h, m, x in said) or "no time"
    return f"expected {minutes[len(minutes) // 2]:%H:%M} in {zone} (±2 min); said {heard}"


_ORDINALS = (
    "first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth thirteenth fourteenth "
    "fifteenth sixteenth seventeenth eighteenth nineteenth twentieth"
)
ORDINALS = _ORDINALS.split()


def _day_pattern(day: int) -> str:
    words = [ORDINALS[day - 1]] if day <= 20 else []
    if day == 30:
        words.append("thirtieth")
    elif day > 20:
        tens = "twenty" if day < 30 else "thirty"
        words.append(f"{tens}[ -]{ORDINALS[day % 10 - 1]}")
    return rf"\b(?:{day}(?:st|nd|rd|th)?|{'|'.join(words)})\b"


def check_date(reply: str, zone: str, start: datetime, end: datetime, part: str) -> str | None:
    text = spoken_to_digits(reply) + " " + reply.lower()
    days = {m.date() for m in _minutes(zone, start, end)}
    for day in days:
        if part == "weekday" and re.search(rf"\b{day:%A}\b", text, re.IGNORECASE):
            return None
        month = re.search(rf"\b(?:{day:%B}|{day:%b}\.?)\b", text, re.IGNORECASE)
        if part == "date" and (f"{day:%Y-%m-%d}" in text or (month and re.search(_day_pattern(day.day), text))):
            return None
    want = " or ".join(f"{d:%A}" if part == "weekday" else f"{d:%B} {d.day}" for d in sorted(days))
    return f"expected {want} in {zone}"


# ---- notes


def normal(text: str) -> str:
    """For matching key words: lower case, numbers as digits, a spelt-out code as one number ('4 5 6 1' -> '4561')."""
    text = spoken_to_digits(text)
    return re.sub(r"(?<=\b\d)[\s,-]+(?=\d\b)", "", text)


def has_keys(text: str, keys: list[str]) -> bool:
    text = normal(text)
    return all(re.search(rf"\b{re.escape(normal(str(key)))}(?:e?s|'s)?\b", text) for key in keys)


# ---- what every reply is checked for

MARKUP = re.compile(
    r"[<>{}\[\]`*#]|\b\w+_\w+\b|\bfunctions?\b|\btool[ _-]?calls?\b|\b[a-z]+\("
    r"|\b(?:call|calling|use|using|invoke|invoking|run|running)\s+(?:the\s+)?(?:calculate|get time|save note)\b",
    re.IGNORECASE,
)
STALL = re.compile(
    r"\b(?:let me (?:check|see|look|find|get|pull|calculate|convert|read)|one moment|just a (?:moment|second|sec)"
    r"|hold on|give me a (?:moment|second|sec)|(?:i'?ll|i will) (?:check|look|find|get|remind you|read|tell you|"
    r"calculate|convert|pull|let you know|look into)|checking (?:that|now|for you)|looking (?:that|it) up)\b",
    re.IGNORECASE,
)
FILLER = re.compile(  # no answer on their own
    r"^(?:(?:sure|sure thing|okay|ok|of course|alright|all right|certainly|absolutely|no problem|yes|yeah|great|"
    r"got it|right|hmm|um|uh|well|so|happy to help|good question|you bet)\s*)+$",
    re.IGNORECASE,
)
_PAST = r"\b(?:i'?ve|i have|i)\s+(?:(?:now|just|also|already|gone ahead and)\s+)?"
_FUTURE = r"\b(?:i'?ll|i will|i'?m going to|let me)\s+(?:(?:now|just|also|go ahead and|make sure to)\s+)?"
NOTE_CLAIM = re.compile(
    rf"{_PAST}(?:saved|noted|stored|jotted|written|wrote|added|made a note|taken note|took note)\b"
    rf"|{_FUTURE}(?:save|note|remember|store|jot|write|add|make a note|keep|take note)\b"
    r"|^(?:noted|saved)\b|\b(?:it'?s|that'?s|note (?:has been|is)) (?:saved|noted)\b",
    re.IGNORECASE,
)
DELETE_CLAIM = re.compile(
    rf"{_PAST}(?:deleted|erased|cleared|wiped|removed|forgotten)\b"
    r"|\b(?:notes?|they|everything) (?:has|have|are|is) (?:been )?(?:deleted|erased|cleared|wiped|removed)\b",
    re.IGNORECASE,
)
ACTION_CLAIM = re.compile(  # what no tool of the agent can do
    rf"{_PAST}(?:booked|sent|ordered|reserved|scheduled|called|texted|emailed|placed|bought|played|turned|"
    r"transferred|set|reminded|paid)\b"
    rf"|{_FUTURE}(?:book|send|order|reserve|schedule|call|text|email|place|buy|play|turn|transfer|set|pay|"
    r"remind(?! you (?:of|what)))\b"
    r"|\b(?:it'?s|that'?s|has been|have been) (?:booked|sent|ordered|reserved|scheduled)\b",
    re.IGNORECASE,
)
CANT = re.compile(
    r"\b(?:can'?t|cannot|can not|unable|not able|don'?t have|do not have|doesn'?t|no access|not possible|"
    r"isn'?t something|is not something|not something i|i'?m (?:just|only) a|only (?:able|help|tell|do|answer)|"
    r"beyond (?:my|what)|not (?:set up|equipped|capable|designed)|i don'?t (?:support|handle|do)|won'?t be able|"
    r"no way to|not (?:currently )?(?:able|possible)|i'?m not able|afraid i)\b",
    re.IGNORECASE,
)
CONFIRM = re.compile(r"\?|\b(?:sure|confirm|yes|really|want me to|shall i|should i|do you want|are you)\b", re.I)


def non_answer(reply: str) -> str | None:
    """An announcement and nothing else: every clause announces ("let me check") or is a filler ("Sure")."""
    clauses = [c.strip() for c in re.split(r"[.,!?;:]+", reply.replace("\u2019", "'")) if c.strip()]
    stalls = [c for c in clauses if STALL.search(c)]
    if stalls and all(c in stalls or FILLER.match(c) for c in clauses):
        return f"announces instead of answering ({stalls[0]!r})"
    return None


def markup(reply: str) -> str | None:
    found = sorted({m.group(0) for m in MARKUP.finditer(reply)})
    return f"voiced {', '.join(repr(f) for f in found)}" if found else None


def claimed_not_done(reply: str, out: Outcome) -> str | None:
    text = reply.replace("\u2019", "'")
    if (m := NOTE_CLAIM.search(text)) and not out.notes_added:
        return f"says {m.group(0)!r} but no note was saved"
    if (m := DELETE_CLAIM.search(text)) and not out.notes_removed:
        return f"says {m.group(0)!r} but nothing was deleted"
    if m := ACTION_CLAIM.search(text):
        return f"says {m.group(0)!r}, which no tool can do"
    return None


# ---- a request's checks


def content(check: dict, out: Outcome) -> tuple[str, str | None]:
    """(the check's name, why it failed or None)."""
    reply = out.reply
    kind = next(iter(check))
    spec = check[kind]
    if kind in ("time", "date", "weekday"):
        zone = out.home if spec == "HOME" else spec
        if kind == "time":
            return kind, check_time(reply, zone, out.asked_at, out.answered_at)
        return kind, check_date(reply, zone, out.asked_at, out.answered_at, kind)
    if kind == "number":
        expected = [arithmetic(spec)]
        return kind, has_number(reply, expected, check.get("rel", 0.005), check.get("abs", 0.0))
    if kind == "convert":
        expected = [converted(*spec)] + ([arithmetic(check["alt"])] if "alt" in check else [])
        return kind, has_number(reply, expected, check.get("rel", 0.02), check.get("abs", 0.0))
    if kind == "words":
        ok = re.search(spec, reply.replace("\u2019", "'"), re.IGNORECASE)
        return kind, None if ok else f"expected /{spec}/"
    if kind == "saved":
        if any(has_keys(note, spec) for note in out.notes_added):
            return kind, None
        return kind, f"no new note with {spec} (new notes: {out.notes_added or 'none'})"
    if kind == "recall":
        wanted = [note["keys"] for note in out.seeded] if spec == "any" else [spec]
        if any(has_keys(reply, keys) for keys in wanted):
            return kind, None
        return kind, f"expected the words of a saved note: {' or '.join(map(str, wanted))}"
    if kind == "confirm_forget":
        if out.notes_removed:
            return kind, "deleted the notes without asking to confirm"
        return kind, None if CONFIRM.search(reply) else "did not ask to confirm"
    if kind == "ended":
        return kind, None if out.ended else "the call did not end"
    if kind in ("no_tool", "decline"):
        if out.tools:
            return kind, f"called {', '.join(out.tools)}"
        if out.notes_added:
            return kind, "saved a note"
        if out.ended:
            return kind, "ended the call"
        if kind == "decline":
            if claim := ACTION_CLAIM.search(reply.replace("\u2019", "'")):
                return kind, f"claims it did it ({claim.group(0)!r})"
            if not CANT.search(reply.replace("\u2019", "'")):
                return kind, "does not say it can't"
        return kind, None
    raise ValueError(f"unknown check {kind!r}")


@dataclass
class Verdict:
    passed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # check -> why
    checkable: bool = False

    @property
    def right(self) -> bool:
        return not self.failed

    def add(self, name: str, why: str | None) -> None:
        if why is None:
            self.passed.append(name)
        elif name in self.failed:
            self.failed[name] += "; " + why
        else:
            self.failed[name] = why


UNIVERSAL = ("answered", "markup", "non_answer", "claimed", "ended_unasked", "deleted")


def judge(checks: list[dict] | tuple[dict, ...], out: Outcome, ends_call: bool = False) -> Verdict:
    """The request's checks and the universal ones, on one turn's outcome."""
    verdict = Verdict(checkable=bool(checks))
    reply = out.reply.strip()
    for check in checks:
        verdict.add(*content(check, out))
    verdict.add("answered", None if reply else "no answer")
    verdict.add("markup", markup(reply))
    verdict.add("non_answer", non_answer(reply))
    verdict.add("claimed", claimed_not_done(reply, out))
    verdict.add("ended_unasked", "the agent ended the call" if out.ended and not ends_call else None)
    verdict.add("deleted", f"{out.notes_removed} notes deleted without a yes" if out.notes_removed else None)
    return verdict


def path_of(records: list[dict]) -> tuple[str, list[str] | None]:
    """A turn's path and tools from its waterfall records ('?' and None when the agent does not report them)."""
    paths = [r["path"] for r in records if "path" in r]
    known = [r["tools"] for r in records if isinstance(r.get("tools"), list)]
    path = next((p for p in ("llm_tool", "llm", "fast") if p in paths), paths[-1] if paths else "?")
    return path, (sorted({t for tools in known for t in tools}) if known else None)
