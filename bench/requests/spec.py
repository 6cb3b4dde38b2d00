"""The request set: loading the halves, the voice each request is spoken in, and what a returning caller brings."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
HALVES = {"tuning": HERE / "tuning.yaml", "held-out": HERE / "held_out.yaml"}
SEED = 19
SKILLS = ("get_time", "calculate", "convert_units", "save_note", "recall_notes", "forget_notes", "end_call")
CATEGORIES = (
    "time",
    "date",
    "calculate",
    "convert",
    "save_note",
    "recall_notes",
    "forget_notes",
    "end_call",
    "multi",
    "knowledge",
    "chat",
    "decline",
    "no_tool",
)

# What a returning caller saved in earlier calls (two of these each, drawn per caller), and what they said then.
NOTE_POOL = (
    {"text": "The garage door code is 4561.", "keys": ["garage", "4561"]},
    {"text": "Buy oat milk and coffee beans.", "keys": ["milk", "coffee"]},
    {"text": "My dentist appointment is next Tuesday.", "keys": ["dentist", "tuesday"]},
    {"text": "The plumber's name is Marco.", "keys": ["marco"]},
    {"text": "My sister's birthday is on the 12th of May.", "keys": ["sister", "may"]},
    {"text": "Water the tomatoes on Sunday.", "keys": ["tomato"]},
    {"text": "The spare key is under the flower pot.", "keys": ["key", "pot"]},
    {"text": "Return the library books by Friday.", "keys": ["library", "friday"]},
)
MEMORY_POOL = (
    [("user", "What's a good recipe for banana bread?"), ("assistant", "Mash three ripe bananas with butter.")],
    [("user", "How far away is the moon?"), ("assistant", "About 384 thousand kilometers.")],
    [("user", "Can you suggest a name for my goldfish?"), ("assistant", "How about Bubbles?")],
    [("user", "What's a good stretch for a sore back?"), ("assistant", "Try a gentle child's pose.")],
)


@dataclass(frozen=True)
class Request:
    id: str
    category: str
    text: str
    tools: tuple[str, ...] = ()  # the tools a good answer uses (informational: the checks judge the content)
    checks: tuple[dict, ...] = ()
    returning: bool = False  # only a returning caller (with notes) can ask it
    notes: tuple[dict, ...] = ()  # notes this request needs the caller to have saved before ({"text", "keys"})

    @classmethod
    def of(cls, raw: dict) -> Request:
        return cls(
            id=raw["id"],
            category=raw["category"],
            text=raw["text"],
            tools=tuple(raw.get("tools", ())),
            checks=tuple(raw.get("checks", ())),
            returning=raw.get("caller") == "returning",
            notes=tuple(raw.get("notes", ())),
        )

    @property
    def checkable(self) -> bool:
        return bool(self.checks)

    @property
    def ends_call(self) -> bool:
        return any("ended" in check for check in self.checks)


def raw_half(half: str) -> list[dict]:
    return yaml.safe_load(HALVES[half].read_text()) or []


def load(half: str) -> list[Request]:
    return [Request.of(raw) for raw in raw_half(half)]


@dataclass(frozen=True)
class Voice:
    engine: str  # "hibari" or "espeak"
    name: str  # hibari: its voice; espeak: voice+variant
    speed: float  # hibari: a rate factor; espeak: words per minute
    seed: int = 0  # hibari's delivery

    def __str__(self) -> str:
        if self.engine == "hibari":
            return f"hibari seed {self.seed} x{self.speed:.2f}"
        return f"espeak {self.name} {self.speed:.0f} wpm"


ESPEAK_VOICES = ("en-us", "en-us+f3", "en-us+m3", "en-us+f4")


def voice_for(request_id: str) -> Voice:
    """The person's voice for this request, fixed by its id: half hibari (seed and speed varied), half espeak-ng."""
    rng = random.Random(f"{SEED}:voice:{request_id}")
    if rng.random() < 0.5:
        return Voice("hibari", "heart", round(rng.uniform(0.85, 1.15), 2), seed=rng.randrange(1, 10_000))
    return Voice("espeak", rng.choice(ESPEAK_VOICES), float(rng.randrange(130, 191, 10)))


def earlier_calls(caller_key: str, requests: list[Request] = ()) -> tuple[list[dict], list[tuple[str, str]]]:
    """A returning caller's saved notes (two drawn from the pool, then those the requests need, newest last) and
    the lines of an earlier call."""
    rng = random.Random(f"{SEED}:caller:{caller_key}")
    notes = rng.sample(list(NOTE_POOL), 2) + [note for request in requests for note in request.notes]
    return notes, list(rng.choice(MEMORY_POOL))
