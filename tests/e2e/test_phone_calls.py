"""Phone calls through the self-hosted livekit-sip, with sipp as the phone (Debian's sip-tester): a real INVITE with a
PCMU + telephone-event offer, the caller's speech played as RTP, RFC 4733 digits, and the agent's audio received,
decoded and transcribed here."""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from livekit import api

from stack import redispatch
from stack.services import Stack, free_port, free_port_block
from stack.telephony import Server, call
from tests.support import phone
from tests.support.browser import write_wav
from tests.support.ports import loopback_ports
from tests.support.speech import speak

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

INBOUND = "+15550100"
CALLER = "+15550199"
MAX_CALLS = 2
GAP = 14.0  # seconds the caller waits for an answer


@pytest.fixture(scope="module")
def uas_port() -> int:
    return phone.free_udp_port()


@pytest.fixture(scope="module")
def phone_stack(artifacts: Path, tmp_path_factory, uas_port: int) -> Iterator[Stack]:
    """The telephony mode: Redis, livekit-server, livekit-sip, the agent (offline speech; skills answer without an
    LLM round trip) and the trunks of a telephony.yaml whose outbound trunk points at the test's sipp UAS."""
    log_dir = artifacts / "logs-phone"
    log_dir.mkdir(exist_ok=True)
    config = yaml.safe_load((Path(__file__).resolve().parents[2] / "telephony.yaml").read_text())
    config["outbound_trunks"][0]["address"] = f"127.0.0.1:{uas_port}"
    telephony_file = tmp_path_factory.mktemp("telephony") / "telephony.yaml"
    telephony_file.write_text(yaml.safe_dump(config))
    settings = loopback_ports()
    rtp = free_port_block(100)
    settings = settings.model_copy(
        update={
            "redis_port": free_port(),
            "sip_port": phone.free_udp_port(),
            "sip_rtp_port_start": rtp,
            "sip_rtp_port_end": rtp + 99,
            "telephony_config": str(telephony_file),
        }
    )
    env = {
        "DATA_DIR": str(tmp_path_factory.mktemp("agent-data")),
        "MAX_SESSIONS": str(MAX_CALLS),
        "PHONE_TRANSFER_TARGETS": '{"operator": "+15550111"}',
        "LLM_BASE_URL": "",
    }
    with Stack(settings, env=env, log_dir=log_dir, telephony=True) as running:
        # As `scripts/up` runs it: it refuses calls no worker takes (486) and sends the agent back where it is lost.
        watcher = redispatch.watch(running)
        try:
            yield running
        finally:
            watcher.stop()


def server(stack: Stack) -> Server:
    return Server(stack.livekit_url, stack.settings.livekit_api_key, stack.settings.livekit_api_secret)


async def rooms(stack: Stack) -> list[str]:
    async with server(stack).client() as lk:
        return [r.name for r in (await lk.room.list_rooms(api.ListRoomsRequest())).rooms]


def sessions_active(stack: Stack) -> float:
    text = httpx.get(f"http://127.0.0.1:{stack.settings.agent_metrics_port}/metrics", timeout=5).text
    found = re.search(r"^voice_agent_sessions_active(?:\{[^}]*\})? (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def idle(stack: Stack, timeout: float = 45.0) -> tuple[list[str], float]:
    """Waits until no call room is left and the agent runs no session; returns what is left."""
    deadline = time.monotonic() + timeout
    while True:
        left = [r for r in asyncio.run(rooms(stack)) if r.startswith(("call-", "outbound-"))]
        active = sessions_active(stack)
        if (not left and active == 0) or time.monotonic() > deadline:
            return left, active
        time.sleep(0.5)


@pytest.fixture(autouse=True)
def clean_capacity(phone_stack: Stack) -> None:
    """Each test starts with every slot free: a call of the test before (or its room) must not take a slot of
    this one, whatever the order the tests run in and however slow the machine."""
    left, active = idle(phone_stack)
    assert not left and active == 0, f"the previous test left rooms {left} and {active} sessions"


def dial(stack: Stack, workdir: Path, steps: str, ear: phone.RtpListener, **kw) -> phone.Sipp:
    workdir.mkdir(parents=True, exist_ok=True)
    source = kw.pop("source", "127.0.0.1")
    number = kw.pop("number", INBOUND)
    caller = kw.pop("caller", CALLER)
    args = [
        f"127.0.0.1:{stack.settings.sip_port}",
        *("-s", number, "-key", "rtp_sink", str(ear.port), "-key", "caller", caller),
        *("-i", source, "-p", str(phone.free_udp_port()), "-mp", str(phone.free_udp_port())),
        *("-m", str(kw.pop("calls", 1)), "-r", str(kw.pop("rate", 10)), "-l", str(kw.pop("limit", 1))),
        *kw.pop("extra", []),
    ]
    hang_up, may_be_refused = kw.pop("hang_up", True), kw.pop("may_be_refused", False)
    scenario = phone.uac_scenario(steps, hang_up=hang_up, may_be_refused=may_be_refused)
    return phone.Sipp(scenario, args, workdir).start()


def transcribe(samples: np.ndarray) -> str:
    from agent.providers.whisper_stt import WhisperSTT

    audio = phone.resample(samples, phone.RATE, 16000).astype(np.float32) / 32768.0
    return WhisperSTT(model="base").transcribe(audio)


def words(text: str) -> str:
    return re.sub(r"[^a-z0-9 ]", " ", text.lower())


def test_caller_asks_a_question_and_the_keypad_changes_what_the_agent_does(phone_stack, tmp_path, artifacts):
    question, seconds = phone.speech_pcap(tmp_path / "question.pcap", speak("What is twelve plus thirty?"))
    digit, digit_s = phone.dtmf_pcap(tmp_path / "two.pcap", "2")  # the keypad menu's "What is the date today?"
    ear = phone.RtpListener().start()
    # The greeting, the question and its answer, the digit and what it asked for: generous pauses, for a busy box.
    marks = [8.0, 8.0 + seconds + GAP, 8.0 + seconds + GAP + digit_s + GAP]
    try:
        steps = [phone.pause(8), phone.play(question, seconds), phone.pause(GAP), phone.play(digit, digit_s)]
        sipp = dial(phone_stack, tmp_path / "sipp", "\n".join([*steps, phone.pause(GAP)]), ear)
        assert sipp.wait(120) == 0, sipp.errors()
    finally:
        ear.stop()
    heard = ear.audio()
    write_wav(artifacts / "phone-call-heard.wav", heard, phone.RATE)
    assert heard.size > phone.RATE * marks[1], "the caller heard less of the call than was played"
    at = [int(m * phone.RATE) for m in marks]
    greeting = transcribe(heard[: at[0]])
    answer = transcribe(heard[at[0] : at[1]])
    menu = transcribe(heard[at[1] :])
    print(f"\ngreeting: {greeting!r}\nanswer: {answer!r}\nafter pressing 2: {menu!r}")
    assert "help" in words(greeting), greeting
    assert re.search(r"\b42\b|forty.?two", words(answer)), answer
    today = datetime.now()
    assert today.strftime("%B").lower() in words(menu) or today.strftime("%A").lower() in words(menu), menu


def test_notes_follow_the_callers_number_to_the_next_call(phone_stack, tmp_path):
    note, note_s = phone.speech_pcap(tmp_path / "note.pcap", speak("Remember that my locker number is forty two."))
    three, three_s = phone.dtmf_pcap(tmp_path / "three.pcap", "3")  # the keypad menu's "What are my notes?"
    caller = "+15550177"
    ear = phone.RtpListener().start()
    try:
        first = dial(
            phone_stack,
            tmp_path / "first",
            "\n".join([phone.pause(6), phone.play(note, note_s), phone.pause(8)]),
            ear,
            caller=caller,
        )
        assert first.wait(60) == 0, first.errors()
    finally:
        ear.stop()
    again = phone.RtpListener().start()
    try:
        second = dial(
            phone_stack,
            tmp_path / "second",
            "\n".join([phone.pause(6), phone.play(three, three_s), phone.pause(GAP)]),
            again,
            caller=caller,
        )
        assert second.wait(60) == 0, second.errors()
    finally:
        again.stop()
    recalled = transcribe(again.audio()[int(6 * phone.RATE) :])
    print(f"\nnotes on the next call: {recalled!r}")
    # The note is read back (a new number has none). Its subject is a number, which Whisper hears reliably over the
    # 8 kHz line; words like "parking spot" came back as "power King's part".
    assert re.search(r"\b42\b|forty.?two", words(recalled)), recalled


def test_the_agent_hangs_up_after_its_goodbye(phone_stack, tmp_path):
    bye, seconds = phone.speech_pcap(tmp_path / "bye.pcap", speak("Thanks, that's all. Goodbye!"))
    ear = phone.RtpListener().start()
    try:
        steps = "\n".join([phone.pause(6), phone.play(bye, seconds)])
        sipp = dial(phone_stack, tmp_path / "sipp", steps, ear, hang_up=False)
        assert sipp.wait(90) == 0, sipp.errors()  # the scenario ends only on the agent's BYE
        hung_up_at = time.time()
    finally:
        ear.stop()
    assert sipp.received("BYE"), "sipp got no BYE"
    goodbye = transcribe(ear.audio(since=0)[int((6 + seconds) * phone.RATE) :])
    print(f"\nbefore the BYE: {goodbye!r}")
    assert "goodbye" in words(goodbye) or "bye" in words(goodbye), goodbye
    last_sound = ear.first_voice_after(hung_up_at - 30)
    assert last_sound is not None and last_sound < hung_up_at


def test_asking_for_the_operator_transfers_the_call_by_refer(phone_stack, tmp_path):
    ask, seconds = phone.speech_pcap(tmp_path / "ask.pcap", speak("Transfer me to the operator, please."))
    ear = phone.RtpListener().start()
    try:
        steps = "\n".join([phone.pause(6), phone.play(ask, seconds), phone.accept_refer(30)])
        sipp = dial(phone_stack, tmp_path / "sipp", steps, ear, hang_up=False)
        assert sipp.wait(90) == 0, sipp.errors()[-2000:]
    finally:
        ear.stop()
    refer = next(b for b in sipp.messages().split("-----") if "REFER sip:" in b)
    assert re.search(r"^Refer-To:.*\+15550111", refer, re.MULTILINE | re.IGNORECASE), refer
    said = transcribe(ear.audio()[int((6 + seconds) * phone.RATE) :])
    print(f"\nbefore the transfer: {said!r}")
    assert "operator" in words(said), said


def test_a_caller_hanging_up_mid_reply_ends_the_job_and_the_room(phone_stack, tmp_path):
    ear = phone.RtpListener().start()
    try:
        sipp = dial(phone_stack, tmp_path / "sipp", phone.pause(3.5), ear)  # hangs up while the agent speaks
        assert sipp.wait(60) == 0, sipp.errors()
    finally:
        ear.stop()
    assert ear.first_voice_after(0) is not None, "the agent had not started speaking when the caller hung up"
    left, active = idle(phone_stack)
    assert not left, f"rooms still open after the caller hung up: {left}"
    assert active == 0, "the agent's session is still running"


def test_calls_from_unknown_places_or_to_unknown_numbers_are_rejected_without_a_room(phone_stack, tmp_path):
    """livekit-sip answers such INVITEs with nothing at all (its flood protection): a scanner learns nothing."""
    before = asyncio.run(rooms(phone_stack))
    ear = phone.RtpListener().start()
    try:
        give_up = ["-recv_timeout", "10000"]
        wrong_source = dial(phone_stack, tmp_path / "source", phone.pause(1), ear, source="127.0.0.2", extra=give_up)
        wrong_number = dial(phone_stack, tmp_path / "number", phone.pause(1), ear, number="+15559999", extra=give_up)
        assert wrong_source.wait(60) != 0 and wrong_number.wait(60) != 0
    finally:
        ear.stop()
        wrong_source.stop()
        wrong_number.stop()
    for sipp in (wrong_source, wrong_number):
        assert not sipp.received("SIP/2.0 2"), "an unknown call was answered"
    assert ear.first_voice_after(0) is None
    assert asyncio.run(rooms(phone_stack)) == before


def test_a_burst_beyond_the_call_limit_is_refused_and_the_call_in_progress_goes_on(phone_stack, tmp_path):
    question, seconds = phone.speech_pcap(tmp_path / "question.pcap", speak("What is twelve plus thirty?"))
    ear = phone.RtpListener().start()
    burst_ear = phone.RtpListener().start()
    try:
        # One call in progress; it asks its question after the burst.
        steps = [phone.pause(25), phone.play(question, seconds), phone.pause(10)]
        ongoing = dial(phone_stack, tmp_path / "ongoing", "\n".join(steps), ear)
        time.sleep(8)
        burst = dial(
            phone_stack,
            tmp_path / "burst",
            phone.pause(2),
            burst_ear,
            calls=20,
            rate=20,
            limit=20,
            caller="+15550142",
            may_be_refused=True,
        )
        burst_rc = burst.wait(120)
        assert ongoing.wait(120) == 0, ongoing.errors()
    finally:
        ear.stop()
        burst_ear.stop()
        burst.stop()
    outcomes = burst.invite_outcomes()
    answered = [code for code in outcomes.values() if code == 200]
    refused = [code for code in outcomes.values() if code != 200]
    print(f"\nburst of 20: {len(answered)} answered, {len(refused)} refused with {sorted(set(refused))}")
    assert burst_rc == 0, burst.errors()[-2000:]
    assert len(outcomes) == 20, "some calls of the burst got no final answer"
    assert len(answered) <= MAX_CALLS - 1, "more calls than the limit were answered"
    assert all(400 <= code < 700 for code in refused)
    heard = ear.audio()
    answer = transcribe(heard[int((25 + seconds) * phone.RATE) :])
    assert re.search(r"\b42\b|forty.?two", words(answer)), answer


def callee(uas_port: int, workdir: Path, scenario: str, *extra: str) -> phone.Sipp:
    """A sipp UAS where the outbound trunk points, listening before the INVITE comes."""
    workdir.mkdir()
    uas = phone.Sipp(scenario, ["-p", str(uas_port), "-i", "127.0.0.1", "-m", "1", *extra], workdir).start()
    deadline = time.monotonic() + 15  # a busy machine can take seconds to start sipp: wait until it listens
    while time.monotonic() < deadline and not udp_port_taken(uas_port):
        time.sleep(0.1)
    time.sleep(0.3)
    return uas


def udp_port_taken(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


async def hang_up_outbound(stack: Stack) -> None:
    async with server(stack).client() as lk:
        for room in (await lk.room.list_rooms(api.ListRoomsRequest())).rooms:
            if room.name.startswith("outbound-"):
                await lk.room.delete_room(api.DeleteRoomRequest(room=room.name))


def place_call(stack: Stack, ringing_timeout_s: int):
    async def place():
        async with server(stack).client() as lk:
            return await call(lk, "+15550123", trunk="local-out", ringing_timeout_s=ringing_timeout_s)

    return asyncio.run(place())


def test_outbound_call_is_answered_and_the_agent_speaks_first(phone_stack, tmp_path, uas_port):
    ear = phone.RtpListener().start()
    scenario = phone.uas_scenario(answer=True, ring_ms=1000, listen_ms=12000)
    uas = callee(uas_port, tmp_path / "uas", scenario, "-key", "rtp_sink", str(ear.port))
    try:
        result = place_call(phone_stack, 20)
        uas.wait(60)
    finally:
        uas.stop()
        ear.stop()
        # The callee's scenario ends without a BYE: hang up from our side, as an application would.
        asyncio.run(hang_up_outbound(phone_stack))
    assert result.outcome == "answered", result
    greeting = transcribe(ear.audio())
    print(f"\noutbound: {result}; heard {greeting!r}")
    assert "help" in words(greeting) or "assistant" in words(greeting), greeting


@pytest.mark.parametrize(
    ("status", "expected"),
    [("486 Busy Here", "busy"), ("", "no-answer"), ("503 Service Unavailable", "failed")],
)
def test_outbound_busy_no_answer_or_failure_is_reported(phone_stack, tmp_path, uas_port, status, expected):
    """The callee refuses with `status`, or (none) rings until the ringing timeout."""
    scenario = phone.uas_scenario(answer=False, status=status, ring_ms=1500, listen_ms=30000)
    uas = callee(uas_port, tmp_path / "uas", scenario)
    try:
        result = place_call(phone_stack, 6)
    finally:
        uas.stop()
    print(f"\n{status or 'ringing'}: {result}")
    assert result.outcome == expected, result
    if status:
        assert str(result.sip_status) == status.split()[0]
    assert result.room not in asyncio.run(rooms(phone_stack))
