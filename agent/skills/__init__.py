"""The skills registry: function tools by name, enabled per agent by configuration (AGENT_SKILLS).

Each skill is a livekit-agents function tool with typed arguments; what it computes lives in a plain
module beside this one. A skill that fails raises ToolError with a sentence the agent can apologise with.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from livekit.agents import AgentSession, RunContext, ToolError, function_tool, llm
from livekit.agents.beta.tools import EndCallTool

from agent.memory import MemoryStore
from agent.skills import calculator, clock, units
from agent.skills.notes import NoteStore


@dataclass
class CallContext:
    """Per-session data the skills need: who is calling, and where their notes live."""

    identity: str = "anonymous"
    notes: NoteStore | None = None
    memory: MemoryStore | None = None
    call: object | None = None  # an agent.phone.Call on a phone call


def caller_of(session: AgentSession | RunContext) -> CallContext:
    try:
        data = session.userdata
    except ValueError:
        return CallContext()
    return data if isinstance(data, CallContext) else CallContext()


@function_tool
async def get_time(context: RunContext, location: str) -> str:
    """Get the current local time and date in a city or time zone.

    Args:
        location: the city or IANA time zone name the person asked about
    """
    try:
        return clock.local_time(location)
    except clock.UnknownPlace as exc:
        raise ToolError(str(exc)) from exc


@function_tool
async def calculate(context: RunContext, expression: str) -> str:
    """Calculate arithmetic exactly instead of guessing.

    Args:
        expression: the arithmetic to compute, with numbers, + - * / ** and parentheses
    """
    try:
        return f"{expression.strip()} is {calculator.spoken_number(calculator.evaluate(expression))}."
    except calculator.CalculationError as exc:
        raise ToolError(f"Sorry, {exc}.") from exc


@function_tool
async def convert_units(context: RunContext, value: float, from_unit: str, to_unit: str) -> str:
    """Convert an amount from one unit to another: length, weight, volume, temperature, speed, time, data.

    Args:
        value: the amount to convert
        from_unit: the unit the amount is in
        to_unit: the unit to convert to
    """
    try:
        result = units.convert(value, from_unit, to_unit)
    except units.ConversionError as exc:
        raise ToolError(f"Sorry, {exc}.") from exc
    return f"{calculator.spoken_number(value)} {from_unit} is {result:.4g} {to_unit}."


@function_tool
async def save_note(context: RunContext, text: str) -> str:
    """Save a note the person asks you to remember, so they can recall it later, in this call or another.

    Args:
        text: what to remember, in the person's words
    """
    caller = caller_of(context)
    if caller.notes is None:
        raise ToolError("Sorry, notes are not available right now.")
    try:
        caller.notes.add(caller.identity, text)
    except ValueError as exc:
        raise ToolError(f"Sorry, {exc}.") from exc
    return f"Okay, I'll remember that: {text.strip()}."


@function_tool
async def recall_notes(context: RunContext, topic: str = "") -> str:
    """Read back the notes the person saved earlier.

    Args:
        topic: only notes about this, or empty for the latest notes
    """
    caller = caller_of(context)
    if caller.notes is None:
        raise ToolError("Sorry, notes are not available right now.")
    found = caller.notes.find(caller.identity, topic)
    if not found:
        return "You have no saved notes" + (f" about {topic}." if topic else ".")
    return "Your notes: " + " ".join(f"{i}. {text.rstrip('.')}." for i, text in enumerate(found, 1))


@function_tool
async def forget_notes(context: RunContext) -> str:
    """Delete the person's saved notes and what you remember of earlier calls, when they ask you to forget."""
    caller = caller_of(context)
    if caller.notes is None:
        raise ToolError("Sorry, notes are not available right now.")
    count = caller.notes.forget(caller.identity)
    if caller.memory is not None:
        caller.memory.forget(caller.identity)
    return f"Done. I deleted {count} note{'' if count == 1 else 's'} and forgot our earlier calls."


FAREWELL = re.compile(
    r"\b(good ?bye|bye|good ?night|see (you|ya)|talk (to you )?(later|soon)|hang up|end (the|this|our) call|"
    r"that'?s (all|it)|i'?m (done|finished)|(got|have) to go|gotta go|take care|farewell)\b",
    re.IGNORECASE,
)


class EndCall(EndCallTool):
    """livekit's end_call, which hangs up only after the person has said goodbye: a small model sometimes calls it
    on a greeting ("Hi there, how are you?"), and a hung-up call cannot be undone."""

    async def _end_call(self, ctx: RunContext) -> Any | None:
        said = [i.text_content or "" for i in ctx.session.history.items if i.type == "message" and i.role == "user"]
        if not (said and FAREWELL.search(said[-1])):
            raise ToolError("The person has not said goodbye, so the call goes on: answer what they said.")
        return await super()._end_call(ctx)


def _end_call() -> list[llm.Tool | llm.Toolset]:
    return [EndCall(extra_description="Say a short, friendly goodbye.", end_instructions="say a short goodbye")]


SKILLS: dict[str, Callable[[], list[llm.Tool | llm.Toolset]]] = {
    "time": lambda: [get_time],
    "calculator": lambda: [calculate],
    "units": lambda: [convert_units],
    "notes": lambda: [save_note, recall_notes, forget_notes],
    "end_call": _end_call,
}


# One line of the agent's instructions per enabled skill: small models follow explicit cues best.
HINTS = {
    # Not "call get_time with that place": the packaged 1.5B model then says that sentence instead of calling it.
    "time": "For the time or date anywhere, use the get_time tool.",
    "calculator": "For any arithmetic, call calculate with the expression.",
    "units": "To convert between units, call convert_units.",
    "notes": "To remember, read back or forget the person's notes, call save_note, recall_notes or forget_notes.",
    "end_call": "When the person says goodbye, call end_call.",
}


def instructions_for(names: Iterable[str]) -> str:
    hints = [HINTS[name] for name in check(names)]
    if hints:
        hints.append("If a tool reports an error, apologise in one short sentence.")
    return " ".join(hints)


class UnknownSkill(ValueError):
    pass


def check(names: Iterable[str]) -> list[str]:
    names = list(names)
    unknown = [n for n in names if n not in SKILLS]
    if unknown:
        raise UnknownSkill(f"unknown skill '{unknown[0]}' in AGENT_SKILLS (known: {', '.join(SKILLS)})")
    return names


def tools_for(names: Iterable[str]) -> list[llm.Tool | llm.Toolset]:
    """Fresh tool objects for one agent (some tools keep per-call state)."""
    return [tool for name in check(names) for tool in SKILLS[name]()]
