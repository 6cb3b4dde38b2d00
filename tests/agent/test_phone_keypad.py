"""Keypad digits on a phone call become turns: a menu entry at once, other numbers after a pause or #."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from types import SimpleNamespace

from livekit import rtc

from agent import phone
from agent.settings import AgentSettings


@dataclass
class Session:
    asked: list[str] = field(default_factory=list)
    interrupted: int = 0

    def interrupt(self) -> None:
        self.interrupted += 1

    def generate_reply(self, *, user_input: str) -> None:
        self.asked.append(user_input)


def caller(identity: str = "sip_+15550199") -> rtc.RemoteParticipant:
    return SimpleNamespace(identity=identity, attributes={phone.NUMBER: "+15550199"}, name="", kind=None)  # type: ignore[return-value]


async def press(room: rtc.Room, digits: str, who: rtc.RemoteParticipant, gap: float = 0.05) -> None:
    for digit in digits:
        room.emit("sip_dtmf_received", rtc.SipDTMF(code=0, digit=digit, participant=who))
        await asyncio.sleep(gap)


def keypad(**settings) -> tuple[Session, rtc.Room, rtc.RemoteParticipant]:
    session, room, who = Session(), rtc.Room(), caller()
    menu = {"1": "What time is it?", "2": "What is the date today?", "21": "Read me my notes"}
    config = AgentSettings(_env_file=None, phone_keypad=menu, phone_digit_timeout_s=0.3, **settings)
    phone.listen_to_keypad(session, room, phone.Call.of(who), config)  # type: ignore[arg-type]
    return session, room, who


async def test_a_menu_digit_is_asked_at_once_and_interrupts_the_agent():
    session, room, who = keypad()
    await press(room, "1", who)
    assert session.asked == ["What time is it?"] and session.interrupted == 1


async def test_a_digit_that_starts_a_longer_entry_waits_for_the_rest():
    session, room, who = keypad()
    await press(room, "21", who)
    assert session.asked == ["Read me my notes"]
    await press(room, "2", who)
    assert session.asked == ["Read me my notes"]  # "2" could still become "21"
    await asyncio.sleep(0.5)
    assert session.asked == ["Read me my notes", "What is the date today?"]


async def test_other_numbers_reach_the_llm_after_a_pause_or_hash():
    session, room, who = keypad()
    await press(room, "4", who)
    await press(room, "7", who)
    assert session.asked == []
    await asyncio.sleep(0.5)
    await press(room, "99#", who)
    assert session.asked == ["(I pressed 4 7 on my keypad.)", "(I pressed 9 9 on my keypad.)"]


async def test_digits_from_someone_else_and_endless_digits():
    session, room, who = keypad()
    await press(room, "1", caller("someone-else"))
    assert session.asked == []
    await press(room, "5" * phone.MAX_DIGITS, who, gap=0)
    assert len(session.asked) == 1 and session.asked[0].count("5") == phone.MAX_DIGITS


def test_the_number_is_the_memory_key_and_in_the_context():
    call = phone.Call.of(caller())
    assert call.memory_key == "tel:+15550199"
    assert "+15550199" in call.context()
