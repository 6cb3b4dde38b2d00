"""The skills registry: function tools by name, enabled per agent by configuration (AGENT_SKILLS).

Each skill is a livekit-agents function tool with typed arguments; what it computes lives in a plain
module beside this one. A skill that fails raises ToolError with a sentence the agent can apologise with.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from livekit.agents import AgentSession, RunContext, ToolError, function_tool, llm
from livekit.agents.beta.tools import EndCallTool

from agent.memory import MemoryStore
from agent.settings import get_settings
from agent.skills import calculator, clock, router, units
from agent.skills.notes import NoteStore


@dataclass
class ForgetAsked:
    """A "delete your notes?" question waiting for its answer: whose notes, and the user message it answered."""

    identity: str
    after: str | None  # id of that user message; only the user message right after it can confirm


@dataclass
class CallContext:
    """Per-session data the skills need: who is calling, and where their notes live."""

    identity: str = "anonymous"
    notes: NoteStore | None = None
    memory: MemoryStore | None = None
    call: object | None = None  # an agent.phone.Call on a phone call
    forget_asked: ForgetAsked | None = None
    forgotten_on: str | None = None  # the user message whose yes deleted the notes (a repeated call says it again)


def caller_of(session: AgentSession | RunContext) -> CallContext:
    try:
        data = session.userdata
    except ValueError:
        return CallContext()
    return data if isinstance(data, CallContext) else CallContext()


# What the person said, for the tools that act for good. The LLM may call forget_notes or end_call on its own (a small
# one does, on "Should I clear my notes?" or "How do you say goodbye?"), so these tools check the person's own words
# with the fast path's classifiers (agent/skills/router.py) and never act on a near miss.


def _session_of(context: AgentSession | RunContext) -> AgentSession:
    return context.session if isinstance(context, RunContext) else context


def user_messages(session: AgentSession) -> list[llm.ChatMessage]:
    """The user messages the agent has answered (or is answering), oldest first; in a group room, only the lines
    addressed to it."""
    try:
        items = session.history.items
    except Exception:  # noqa: BLE001 - a session not started has no history: nothing was said
        return []
    return [item for item in items if item.type == "message" and item.role == "user"]


def request_text(session: AgentSession, message: llm.ChatMessage | None) -> str:
    """A user message as the fast path reads it (in a group room, without "Ana: " and the agent's name)."""
    if message is None:
        return ""
    try:
        read = getattr(session.current_agent, "request_of", None)
    except RuntimeError:  # no agent yet, or closing
        read = None
    text = message.text_content or ""
    return read(text) if callable(read) else text


def answers_forget_question(session: AgentSession, caller: CallContext, message: llm.ChatMessage) -> bool:
    """Whether `message` is the reply to a "delete your notes?" question: said by the person asked, right after the
    question. Anything said in between cancels the question."""
    asked = caller.forget_asked
    if asked is None or asked.identity != caller.identity:
        return False
    earlier = [m for m in user_messages(session) if m.id != message.id]
    return bool(earlier) and earlier[-1].id == asked.after


@function_tool
async def get_time(context: RunContext, location: str = "") -> str:
    """Get the current local time and date in a city or time zone.

    Args:
        location: the city or IANA time zone name the person asked about; empty for here
    """
    try:
        return clock.local_time(location or get_settings().home_timezone)
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
    return f"{calculator.spoken_number(value)} {from_unit} is {calculator.spoken_number(result)} {to_unit}."


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


KEPT = "Okay, I haven't deleted anything."
NOTHING_ASKED = "The person did not ask to delete anything, and nothing was deleted: answer what they said."


@function_tool
async def forget_notes(context: RunContext) -> str:
    """Delete the person's saved notes and what you remember of earlier calls, when they ask you to forget. It asks
    them to confirm first; call it again when they say yes."""
    caller = caller_of(context)
    if caller.notes is None:
        raise ToolError("Sorry, notes are not available right now.")
    session = _session_of(context)
    said = user_messages(session)
    latest = said[-1] if said else None
    latest_id = latest.id if latest else None
    if latest_id is not None and caller.forgotten_on == latest_id:
        return "Done. Your notes are deleted and I forgot our earlier calls."  # the same yes, called again
    answered = latest is not None and answers_forget_question(session, caller, latest)
    caller.forget_asked = None  # a question is answered once, whatever the answer
    text = request_text(session, latest)
    if answered and router.is_yes(text):  # only an explicit yes, right after the question, deletes
        count = caller.notes.forget(caller.identity)
        if caller.memory is not None:
            caller.memory.forget(caller.identity)
        caller.forgotten_on = latest_id
        if count == 0:
            return "Done. I forgot our earlier calls."
        return f"Done. I deleted {count} note{'' if count == 1 else 's'} and forgot our earlier calls."
    if answered and router.is_no(text):
        return KEPT
    if router.declines(text):
        return NOTHING_ASKED
    count = caller.notes.count(caller.identity)
    remembers = caller.memory is not None and bool(caller.memory.recent(caller.identity, 1))
    if count == 0 and not remembers:
        return "You have no saved notes, so there is nothing to delete."
    caller.forget_asked = ForgetAsked(caller.identity, latest_id)
    if count == 0:
        return "You have no saved notes. Shall I forget our earlier calls? Say yes to confirm."
    what = "your note" if count == 1 else f"all {count} of your notes"
    return f"Delete {what} and forget our earlier calls? Say yes to confirm."


# The tool's answer when the person did not end the call: the LLM carries on (an error would make it apologise).
CALL_GOES_ON = "The person did not ask to end the call, so the call goes on: answer what they said."
FOR_THE_LLM = {CALL_GOES_ON, NOTHING_ASKED}  # tool results that tell the LLM what to do: never said as they are


class EndCall(EndCallTool):
    """livekit's end_call, which hangs up only when the person's latest words are themselves a goodbye or a request to
    hang up: a small model calls it on a greeting ("Hi there, how are you?") or a question ("How do you say
    goodbye?"), and a hung-up call cannot be undone."""

    async def _end_call(self, ctx: RunContext) -> Any | None:
        said = user_messages(ctx.session)
        if not (said and router.wants_end_call(request_text(ctx.session, said[-1]))):
            return CALL_GOES_ON
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
