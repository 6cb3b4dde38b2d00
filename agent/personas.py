"""Personas from configuration (agent/personas.yaml): instructions, greeting, voice, skills, handoff."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

from agent import skills

PERSONAS_FILE = Path(__file__).with_name("personas.yaml")


@dataclass(frozen=True)
class Persona:
    name: str
    instructions: str
    greeting: str
    voice: str = "heart"
    speed: float = 1.0  # speaking rate, so that two personas on one voice still sound apart
    skills: tuple[str, ...] = ()
    hands_over_to: str | None = None


class UnknownPersona(ValueError):
    pass


@lru_cache(maxsize=4)
def load(path: Path = PERSONAS_FILE) -> dict[str, Persona]:
    raw = yaml.safe_load(path.read_text()) or {}
    personas = {
        name: Persona(
            name=name,
            instructions=" ".join(str(spec["instructions"]).split()),
            greeting=str(spec["greeting"]),
            voice=str(spec.get("voice", "heart")),
            speed=float(spec.get("speed", 1.0)),
            skills=tuple(skills.check(spec.get("skills", []))),
            hands_over_to=spec.get("hands_over_to"),
        )
        for name, spec in raw.items()
    }
    for persona in personas.values():
        if persona.hands_over_to and persona.hands_over_to not in personas:
            raise UnknownPersona(f"persona '{persona.name}' hands over to unknown persona '{persona.hands_over_to}'")
    return personas


def get(name: str) -> Persona:
    personas = load()
    if name not in personas:
        raise UnknownPersona(f"unknown persona '{name}' (known: {', '.join(personas)})")
    return personas[name]
