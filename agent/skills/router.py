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
    text = " ".join(out)
    text = re.sub(r"\b(\d+) point ((?:\d )*\d)\b", lambda m: f"{m.group(1)}.{m.group(2).replace(' ', '')}", text)
    text = re.sub(r"\b(\d+) and a half\b", lambda m: f"{m.group(1)}.5", text)
    return re.sub(r"\b(?:a|one) half\b", "0.5", text)


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


# Requests that act for good. Deleting notes, hanging up, transferring the call or saving a note each happen only on
# an unambiguous request: the whole utterance must be one, so a question ("should I clear my notes?"), reported or
# quoted speech ("my daughter just said bye bye"), a negation ("don't delete my notes"), a hypothetical ("what if I
# said goodbye?") or "forget it" as a filler never matches. A near miss falls through to the LLM, and the tools
# themselves check the person's words with these same functions (agent/skills/__init__.py).


def _normal(utterance: str) -> tuple[str, bool]:
    """The words, lower-case, with the punctuation between them dropped; and whether it was asked as a question."""
    text = utterance.lower().replace("\u2019", "'").replace("\u2018", "'")
    question = "?" in text
    text = re.sub(r"[^a-z0-9' ]+", " ", text)  # commas, stops, quotes, dashes ("bye-bye")
    text = re.sub(r"(?<![a-z])'|'(?![a-z])", " ", text)  # quote marks, not apostrophes
    return re.sub(r"\s+", " ", text).strip(), question


def _alternatives(phrases: str) -> str:
    """A regex for any of these comma-separated phrases, the longest first."""
    return "(?:" + "|".join(sorted((p.strip() for p in phrases.split(",")), key=len, reverse=True)) + ")"


# Words that may come with a goodbye but do not end a call on their own.
_CLOSING = _alternatives(
    "ok, okay, alright, all right, right, well, so, and, then, now, oh, um, uh, ah, please, great, you too, "
    "perfect, cool, awesome, good, lovely, wonderful, cheers, no, nope, no thanks, no thank you, "
    "nothing else, not really, thanks, thank you, thanks a lot, thanks so much, thank you so much, "
    "thank you very much, many thanks, thanks again, thank you again, "
    "thanks for (?:your |the |all the |all your )?help, "
    "thank you for (?:your |the |all the |all your )?help, thanks for everything, "
    "thank you for everything, that's all, that is all, that's it, that is it, that's all for now, "
    "that's all for today, that's all i needed, that's everything, that will be all, that'll be all, "
    "i'm done, i am done, i'm all set, i'm good, we're done, we are done, we're done here, i have to go, "
    "i've got to go, i got to go, i gotta go, gotta go, i need to go, i must go, have a nice day, "
    "have a good day, have a great day, have a good one, have a nice evening, have a good evening, "
    "have a good weekend, nice talking to you, it was nice talking to you, "
    "you've been (?:very |really |so )?helpful, you've been a (?:great|big) help"
)
# Words that end a call: a goodbye, or a request to hang up.
_FAREWELL = _alternatives(
    "bye, bye bye, goodbye, good bye, bye now, bye for now, goodbye for now, good night, goodnight, "
    "night night, see you, see ya, see you later, see you soon, see you tomorrow, talk to you later, "
    "talk to you soon, talk later, talk soon, catch you later, take care, farewell, so long, hang up, "
    "hang up now, please hang up, you can hang up, you can hang up now, end the call, end this call, "
    "end our call, end call, you can end the call, please end the call, goodbye to you, goodbye to you too, "
    "bye to you too"
)
# Who a goodbye may be addressed to ("bye everyone", "goodbye Ava"): one word, and not one that goes on a sentence.
_NOT_A_NAME = (
    r"to|for|from|and|or|but|my|your|his|her|our|their|is|was|said|says|yet|not|in|at|on|the|a|an|it|if|when|so|"
    r"don|didn|never|forever|mean|means|word|words|no|wait|what|why|how|who|sorry|is|are|says"
)
_TO_WHOM = rf"(?: my friend| (?!(?:{_NOT_A_NAME})\b)[a-z]{{2,12}})?"
_GOODBYE = re.compile(rf"^(?:{_CLOSING} |{_FAREWELL} )*{_FAREWELL}{_TO_WHOM}(?: {_CLOSING}| {_FAREWELL})*$")
_HANG_UP_PLEASE = re.compile(
    r"^(?:please )?(?:can|could|would|will) you (?:please )?(?:hang up|end (?:the|this|our) call)(?: now)?"
    r"(?: please)?(?: thanks| thank you)?$"
)


def wants_end_call(utterance: str) -> bool:
    """Whether the person said goodbye or asked to hang up, and nothing else: "That's all, thanks. Goodbye!",
    "Hang up please", "Could you end the call?" (not "How do you say goodbye?", "My daughter said bye bye")."""
    text, question = _normal(utterance)
    if question:
        return bool(_HANG_UP_PLEASE.match(text))
    return bool(_GOODBYE.match(text) or _HANG_UP_PLEASE.match(text))


_LEAD = r"(?:(?:ok|okay|alright|all right|so|now|and|please|hey|well|actually|then|um|uh) )*"
_ASK_YOU = r"(?:can|could|would|will) you (?:please )?"
_FORGET = re.compile(
    rf"^{_LEAD}(?P<ask>{_ASK_YOU}|please |i want you to |i'd like you to |i would like you to |i need you to "
    r"|go ahead and )?(?:please )?(?:forget|delete|erase|clear|wipe|remove)(?: out)? "
    r"(?:(?:all (?:of )?)?(?:my|the) (?:saved )?notes|all notes|all (?:of )?my (?:saved )?notes"
    r"|everything (?:i've |i have |i )?(?:told|asked|said to) you(?: to remember)?|everything you (?:know|remember) "
    r"about me|everything (?:in|from) my notes)(?: (?:please|now|for me|right now|completely|permanently|thanks|"
    r"thank you))*$"
)


def wants_forget(utterance: str) -> bool:
    """Whether the person asked, and only asked, to delete their notes: "Delete all my notes", "Forget my notes
    please", "Could you erase my notes?" (not "Should I clear my notes?", "Don't delete my notes")."""
    text, question = _normal(utterance)
    match = _FORGET.match(text)
    # A question only as a request ("could you delete my notes?").
    return bool(match and (not question or (match.group("ask") or "").startswith(("can", "could", "would", "will"))))


_DELETING = re.compile(r"\b(?:forget|delete|erase|clear|wipe|remove)\b")
_FILLER_FORGET_IT = re.compile(r"^(?:oh |ah |um |uh |no |okay |ok )*(?:forget it|never ?mind)\b[ ,.!]*")
_NEGATION = re.compile(
    r"\b(?:don't|dont|do not|doesn't|does not|didn't|did not|never|not|won't|will not|shouldn't|wouldn't|"
    r"mustn't|can't|cannot|no|nothing)\b"
)


def declines(utterance: str) -> bool:
    """A negation or "forget it" as a filler: whatever it mentions, it is not a request to act."""
    text, _ = _normal(utterance)
    if (rest := _FILLER_FORGET_IT.sub("", text)) != text:
        return not wants_forget(rest)
    return bool(_NEGATION.search(text))


_YES = _alternatives(
    "yes, yeah, yep, yup, yes please, sure, i'm sure, i am sure, yes i'm sure, confirm, confirmed, "
    "i confirm, correct, that's right, do it, go ahead, please do, please, absolutely, definitely, "
    "of course, delete them, delete it, delete it all, delete all of them, delete everything, "
    "delete my notes, delete all my notes, delete them all, yes delete them, forget them, erase them"
)
_NO = _alternatives(
    "no, nope, nah, no thanks, no thank you, don't, do not, don't do it, don't delete them, "
    "don't delete anything, don't delete my notes, keep them, keep my notes, keep them please, cancel, "
    "cancel that, cancel it, stop, never mind, nevermind, forget it, not now, no way, wait, hold on, "
    "i changed my mind, i've changed my mind, leave them, no don't"
)
_FILL = r"(?:ok|okay|alright|um|uh|oh|well|and|then|now|thanks|thank you)"
_YES_ONLY = re.compile(rf"^(?:{_FILL} )*{_YES}(?: {_YES}| {_FILL})*$")
_NO_ONLY = re.compile(rf"^(?:{_FILL} )*{_NO}(?: {_NO}| {_FILL})*$")


def is_yes(utterance: str) -> bool:
    """An explicit yes and nothing else ("Yes.", "Yes, delete them."; not "Okay", "Yes?", "Yes, but first...")."""
    text, question = _normal(utterance)
    return not question and bool(_YES_ONLY.match(text))


def is_no(utterance: str) -> bool:
    """A plain no ("No.", "No, keep them.", "Cancel")."""
    text, _ = _normal(utterance)
    return bool(_NO_ONLY.match(text))


# What people reminisce about ("remember that time we...", "remember the trip to Rome"): nothing to note.
_MEMORIES = (
    r"(?:(?:the|that|those|this|these|our|my|one|all|the good)\s)?(?:(?:first|last|other|one|old|good old)\s)?"
    r"(?:time|times|day|days|night|nights|morning|evening|afternoon|weekend|week|month|year|years|summer|winter|"
    r"spring|autumn|fall|holiday|holidays|vacation|trip|party|wedding|birthday|christmas|moment|moments|place|"
    r"restaurant|hotel|movie|film|song|book|game|guy|girl|man|woman|kid|kids|dog|cat|one|thing|story|joke|show|"
    r"concert|beach|house|old days|days when|good old days)\b(?!\s(?:is|are|will|needs|need|has|have|starts|"
    r"begins|ends|at|on)\b)"
)
_REMINISCING = re.compile(
    rf"^(?:when|how|what|where|who|why|whether|if|back|us|me|him|her|them|you|the way|{_MEMORIES}|we (?:went|met|"
    r"had|saw|did|were|got|made|came|took|used|visited|stayed|danced|played|watched|tried|lived|ate|drove|flew|spent|"
    r"walked|talked|laughed|sang|ran|first))\b"
)
_A_FACT = re.compile(r"^to |\d|\b(?:is|are|was|were|will|needs?|has|have|must|should)\b|'s\b")


def note_to_save(utterance: str) -> str | None:
    """What to note when the person asks to save a note, and only then: "Remember that the door code is 4561",
    "Save a note: buy milk" (not "Remember that time we went to Paris", "Remember when we met?")."""
    if utterance.strip().endswith("?") or "?" in utterance:
        return None  # "Remember when we met?" is a question
    text = _clean(utterance.lower().replace("\u2019", "'"))
    # "same a note" / "safe a note": how Whisper often hears "save a note"; the 1.5B LLM then claimed to have saved
    # it without calling the tool.
    if match := re.match(
        r"^(?:please,? )?(?:(?:make|take|save|same|safe|write) a note|note this)(?: down)?[,:]?(?: that,?| of| saying)?"
        r"[,:]? (.{3,})$",
        text,
    ):
        return match.group(1)
    match = re.match(r"^(?:please,? )?remember(?:[,:]? that,?|[,:]) (?P<note>.{3,})$", text)
    bare = re.match(r"^(?:please,? )?remember (?P<note>.{3,})$", text)
    found = match or bare
    if not found:
        return None
    note = found.group("note")
    if _REMINISCING.match(note) or (not match and not _A_FACT.search(note)):
        return None
    return note


_WHO_NOT = re.compile(
    r"\b(?:my|your|his|her|our|their|its|you|me|him|them|us|it|myself|yourself|someone|somebody|anyone|anybody|"
    r"about|for|because|if|when|while|after|before|tomorrow|today|tonight|later|again|instead|sometime|or|and|but|"
    r"so|then|too|also|yet|this|that|these|those|there|here|more|first|sleep|bed|hold|wait|money|account|no|not|"
    r"yes|please|sorry)\b"
)
_WHO = r"(?:the |a |an )?(?P<who>[a-z]+(?: [a-z]+){0,2}?)(?: (?:please|now|right now|thanks|thank you))*"
_TRANSFER = re.compile(
    rf"^{_LEAD}(?:please |{_ASK_YOU})?(?:(?:transfer|connect) me (?:through )?to|put me through to"
    r"|(?:(?:can|could|may) i (?:please )?|i(?:'d| would) like to |i want to |i need to |let me )(?:speak|talk) "
    rf"(?:to|with)) {_WHO}$"
)


def transfer_destination(utterance: str) -> str | None:
    """Who the person asked to be put through to: "Transfer me to the operator", "Can I speak to a human?" (not
    "Can I talk to my mom", "Can I talk to you about something?", "Don't transfer me")."""
    text, _ = _normal(utterance)
    match = _TRANSFER.match(text)
    if not match:
        return None
    who = (match.group("who") or "").strip()
    return None if not who or _WHO_NOT.search(who) else who


def _notes(utterance: str) -> Route | None:
    text = _clean(utterance.lower())
    if (note := note_to_save(utterance)) is not None:
        return Route("save_note", {"text": note})
    if wants_forget(utterance):
        return Route("forget_notes", {})
    if _DELETING.search(_FILLER_FORGET_IT.sub("", _normal(utterance)[0])):
        return None  # "should I clear my notes?", "don't delete my notes": the LLM answers, nothing is deleted
    if re.search(
        r"\b(my notes|what did i ask you to remember|what did i tell you to remember|read me my notes)\b", text
    ):
        return Route("recall_notes", {"topic": ""})
    return None


def _goodbye(utterance: str) -> Route | None:
    return Route("end_call", {}) if wants_end_call(utterance) else None


def _transfer(utterance: str) -> Route | None:
    """ "Transfer me to the operator", "can I speak to sales": the transfer tool checks the name against its list."""
    destination = transfer_destination(utterance)
    return Route("transfer_call", {"destination": destination}) if destination else None


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
        elif name in ("calculate", "convert_units"):
            found = parse(numeric)
        else:
            found = parse(utterance)  # these read the punctuation too: a question is no request to act
        if name in enabled and found and found.tool in enabled:
            return found
    return None
