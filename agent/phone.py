"""Phone calls: a caller who reaches the agent through livekit-sip (kind SIP), or a number the agent dialled.

What differs from a web call: the agent greets only once the call is answered (`sip.callStatus` active), the caller
is known by their number, the keypad works (RFC 4733 digits arrive as `sip_dtmf_received`), the agent can hang up
(deleting the room makes livekit-sip send BYE) and hand the call over to a configured number (SIP REFER).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from livekit import api, rtc
from livekit.agents import AgentSession, RunContext, ToolError, function_tool, get_job_context, llm

from agent.settings import AgentSettings

logger = logging.getLogger("agent.phone")

STATUS = "sip.callStatus"
NUMBER = "sip.phoneNumber"
MAX_DIGITS = 32  # a longer run of digits is acted on at once rather than collected without end


def is_phone(participant: rtc.RemoteParticipant) -> bool:
    return participant.kind == rtc.ParticipantKind.PARTICIPANT_KIND_SIP


@dataclass
class Call:
    """One phone call: who it is with, and the digits typed on the keypad that are not yet handled."""

    participant: rtc.RemoteParticipant
    number: str
    digits: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, participant: rtc.RemoteParticipant) -> Call:
        number = participant.attributes.get(NUMBER, "") or participant.name or participant.identity
        return cls(participant, number)

    @property
    def memory_key(self) -> str:
        """Notes and memories follow the phone number from call to call (identities differ per call)."""
        return f"tel:{self.number}"

    def context(self) -> str:
        """A line for the agent's instructions."""
        return (
            "You are on a phone call; keep each answer to one or two short sentences. The caller can also press keys "
            f"on their keypad. The caller's number is {self.number}."
        )


async def answered(room: rtc.Room, participant: rtc.RemoteParticipant, timeout: float = 60.0) -> bool:
    """Waits until the call is answered (an inbound call is answered once the agent publishes its audio; an outbound
    one when the callee picks up). False if the caller hung up or it did not happen in time."""
    if participant.attributes.get(STATUS, "active") == "active":
        return True
    done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    def on_attributes(changed: dict[str, str], who: rtc.Participant) -> None:
        if who.identity == participant.identity and changed.get(STATUS) and not done.done():
            status = changed[STATUS]
            if status == "active":
                done.set_result(True)
            elif status == "hangup":
                done.set_result(False)

    def on_left(who: rtc.RemoteParticipant) -> None:
        if who.identity == participant.identity and not done.done():
            done.set_result(False)

    room.on("participant_attributes_changed", on_attributes)
    room.on("participant_disconnected", on_left)
    try:
        if participant.attributes.get(STATUS, "active") == "active":  # answered while we subscribed
            return True
        return await asyncio.wait_for(done, timeout)
    except TimeoutError:
        return False
    finally:
        room.off("participant_attributes_changed", on_attributes)
        room.off("participant_disconnected", on_left)


def listen_to_keypad(session: AgentSession, room: rtc.Room, call: Call, settings: AgentSettings) -> None:
    """Digits the caller presses become a turn once they pause (or press #): a keypad menu entry is asked as if the
    caller had said it; other digits reach the LLM as what they are."""
    pending: asyncio.TimerHandle | None = None

    def deliver() -> None:
        nonlocal pending
        pending = None
        digits = "".join(call.digits).rstrip("#")
        call.digits.clear()
        if not digits:
            return
        request = settings.phone_keypad.get(digits)
        logger.info("keypad: %s digit(s)%s", len(digits), " (menu entry)" if request else "")
        session.interrupt()
        if request:
            session.generate_reply(user_input=request)
        else:
            session.generate_reply(user_input=f"(I pressed {' '.join(digits)} on my keypad.)")

    def on_dtmf(ev: rtc.SipDTMF) -> None:
        nonlocal pending
        if ev.participant is None or ev.participant.identity != call.participant.identity:
            return
        call.digits.append(ev.digit)
        if pending is not None:
            pending.cancel()
        typed = "".join(call.digits)
        menu_entry = typed in settings.phone_keypad and _unique_prefix(call, settings)
        if ev.digit == "#" or len(typed) >= MAX_DIGITS or menu_entry:
            deliver()
        else:
            pending = asyncio.get_running_loop().call_later(settings.phone_digit_timeout_s, deliver)

    room.on("sip_dtmf_received", on_dtmf)


def _unique_prefix(call: Call, settings: AgentSettings) -> bool:
    """No longer menu entry starts with the digits so far, so there is nothing to wait for."""
    typed = "".join(call.digits)
    return not any(key != typed and key.startswith(typed) for key in settings.phone_keypad)


def transfer_tool(targets: dict[str, str]) -> llm.FunctionTool:
    """Hands the call to one of the configured numbers (never to a number the caller names: that would let anyone
    dial anywhere on the trunk's account)."""
    names = ", ".join(sorted(targets))

    async def transfer_call(context: RunContext, destination: str) -> str:
        number = targets.get(destination.strip().lower())
        if number is None:
            raise ToolError(f"Sorry, I can only transfer you to: {names}.")
        job = get_job_context()
        caller = next((p for p in job.room.remote_participants.values() if is_phone(p)), None)
        if caller is None:
            raise ToolError("Sorry, this is not a phone call, so I cannot transfer it.")
        await context.session.say(f"Transferring you to the {destination} now.", add_to_chat_ctx=False)
        try:
            await job.transfer_sip_participant(caller, number if ":" in number else f"tel:{number}")
        except api.TwirpError as exc:
            logger.warning("transfer failed: %s", exc.message)
            raise ToolError("Sorry, the transfer did not go through.") from None
        logger.info("call transferred to %s", destination)
        return ""  # the caller is gone: nothing more to say

    return function_tool(
        transfer_call,
        name="transfer_call",
        description=f"Transfer the phone call to a person. destination is one of: {names}.",
    )


def data_key(identity: str) -> str:
    """Whose notes a participant who is not a phone line gets: their identity, kept out of the phone numbers'
    namespace (`tel:`) even when a token minted elsewhere claims it."""
    return f"web:{identity}" if identity.lower().startswith("tel:") else identity
