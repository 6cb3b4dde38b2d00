"""A phone for tests: sipp (Debian's sip-tester) does the SIP signalling and plays the caller's audio from pcaps made
here (G.711 u-law speech, RFC 4733 digits); an RTP listener is the caller's ear: it receives what livekit-sip sends
back, in order of RTP timestamp, with arrival times.
"""

from __future__ import annotations

import re
import shutil
import socket
import struct
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from livekit import rtc

from stack.services import free_port

RATE = 8000
PTIME = 160  # samples per 20 ms packet
DTMF_PT = 101


# --- G.711 u-law (ITU-T G.711), vectorised ---


def ulaw_encode(pcm: np.ndarray) -> bytes:
    x = np.clip(pcm.astype(np.int32), -32635, 32635)
    sign = np.where(x < 0, 0x80, 0)
    x = np.abs(x) + 0x84
    exponent = np.floor(np.log2(x)).astype(np.int32) - 7
    mantissa = (x >> (exponent + 3)) & 0x0F
    return (~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8).tobytes()


def ulaw_decode(data: bytes) -> np.ndarray:
    u = ~np.frombuffer(data, dtype=np.uint8).astype(np.int32) & 0xFF
    sign = u & 0x80
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    x = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return np.where(sign != 0, -x, x).astype(np.int16)


def resample(pcm: np.ndarray, src: int, dst: int) -> np.ndarray:
    if src == dst:
        return pcm
    resampler = rtc.AudioResampler(src, dst, num_channels=1, quality=rtc.AudioResamplerQuality.HIGH)
    out = resampler.push(rtc.AudioFrame(pcm.astype(np.int16).tobytes(), src, 1, len(pcm))) + resampler.flush()
    return np.concatenate([np.frombuffer(f.data, dtype=np.int16) for f in out]) if out else np.zeros(0, np.int16)


# --- pcaps sipp can play (play_pcap_audio rewrites addresses and ports to the call's) ---


def _udp_record(payload: bytes, t: float, sport: int = 6000, dport: int = 6000) -> bytes:
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, bytes([127, 0, 0, 1]), bytes([127, 0, 0, 1])
    )
    frame = b"\x00" * 12 + b"\x08\x00" + ip + udp
    sec, usec = int(t), int(round((t - int(t)) * 1e6))
    return struct.pack("<IIII", sec, usec, len(frame), len(frame)) + frame


def _write_pcap(path: Path, packets: list[tuple[float, bytes]]) -> Path:
    header = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)  # Ethernet link type
    path.write_bytes(header + b"".join(_udp_record(p, t) for t, p in packets))
    return path


def _rtp(pt: int, seq: int, ts: int, payload: bytes, marker: bool = False, ssrc: int = 0x1234ABCD) -> bytes:
    return struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc) + payload


def speech_pcap(path: Path, pcm16k: np.ndarray, rate: int = 16000) -> tuple[Path, float]:
    """The caller's speech as 20 ms PCMU packets; returns the pcap and its duration in seconds."""
    pcm = resample(pcm16k, rate, RATE)
    pcm = np.concatenate([pcm, np.zeros((-len(pcm)) % PTIME, np.int16)])
    packets = []
    for i in range(len(pcm) // PTIME):
        payload = ulaw_encode(pcm[i * PTIME : (i + 1) * PTIME])
        packets.append((i * 0.02, _rtp(0, i, i * PTIME, payload, marker=i == 0)))
    return _write_pcap(path, packets), len(pcm) / RATE


DIGITS = {**{str(d): d for d in range(10)}, "*": 10, "#": 11}


def dtmf_pcap(path: Path, digits: str, tone_ms: int = 160, gap_ms: int = 200) -> tuple[Path, float]:
    """Keypad digits as RFC 4733 telephone-event packets (payload type 101)."""
    packets, t, seq, ts = [], 0.0, 0, 0
    for digit in digits:
        event = DIGITS[digit]
        steps = tone_ms // 20
        for i in range(steps):
            duration = (i + 1) * PTIME
            packets.append((t, _rtp(DTMF_PT, seq, ts, struct.pack("!BBH", event, 10, duration), marker=i == 0)))
            seq, t = seq + 1, t + 0.02
        for _ in range(3):  # the end packet, sent three times as RFC 4733 asks
            packets.append((t, _rtp(DTMF_PT, seq, ts, struct.pack("!BBH", event, 0x80 | 10, steps * PTIME))))
            seq += 1
        t += gap_ms / 1000
        ts += steps * PTIME + gap_ms * 8
    return _write_pcap(path, packets), t


# --- the caller's ear ---


@dataclass
class RtpListener:
    """Receives the RTP livekit-sip sends to the phone (PCMU); keeps the audio in timestamp order."""

    port: int = 0
    packets: list[tuple[float, int, int, bytes]] = field(default_factory=list)  # (arrival, seq, ts, payload)
    _sock: socket.socket | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> RtpListener:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", self.port))
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        threading.Thread(target=self._run, name=f"rtp-{self.port}", daemon=True).start()
        return self

    def _run(self) -> None:
        assert self._sock
        while not self._stop.is_set():
            try:
                data = self._sock.recv(2048)
            except TimeoutError:
                continue
            except OSError:
                return
            if len(data) < 12:
                continue
            pt = data[1] & 0x7F
            if pt != 0:
                continue
            seq, ts = struct.unpack("!HI", data[2:8])
            cc = data[0] & 0x0F
            self.packets.append((time.time(), seq, ts, data[12 + 4 * cc :]))

    def stop(self) -> None:
        self._stop.set()
        if self._sock:
            self._sock.close()

    def audio(self, since: float = 0.0) -> np.ndarray:
        """What the phone heard (8 kHz int16), laid out by RTP timestamp, from packets that arrived after `since`."""
        packets = [p for p in list(self.packets) if p[0] >= since]
        if not packets:
            return np.zeros(0, np.int16)
        first = min(p[2] for p in packets)
        end = max(p[2] - first + len(p[3]) for p in packets)
        out = np.zeros(min(end, RATE * 120), np.int16)
        for _, _, ts, payload in packets:
            start = ts - first
            if 0 <= start < len(out):
                chunk = ulaw_decode(payload)[: len(out) - start]
                out[start : start + len(chunk)] = chunk
        return out

    def first_voice_after(self, since: float, level: int = 600) -> float | None:
        """Arrival time of the first packet after `since` that carries audible sound."""
        for arrival, _, _, payload in list(self.packets):
            if arrival >= since and np.abs(ulaw_decode(payload).astype(np.int32)).max() >= level:
                return arrival
        return None


# --- sipp ---


def sipp_binary() -> str:
    found = shutil.which("sipp")
    if not found:
        raise RuntimeError("sipp is missing: run `bash scripts/setup --test` (Debian package sip-tester)")
    return found


SDP = """v=0
o=user1 53655765 2353687637 IN IP4 127.0.0.1
s=-
c=IN IP4 127.0.0.1
t=0 0
m=audio [rtp_sink] RTP/AVP 0 101
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
a=ptime:20
a=sendrecv
"""


REFUSED = ("403", "404", "480", "486", "488", "500", "503", "600", "603")


def caller_request(
    method: str,
    cseq: int,
    *,
    in_dialog: bool = True,
    contact: bool = True,
    extra: tuple = (),
    content_type: str = "",
    body: str = "",
) -> str:
    """sipp XML that sends one request of the caller's dialog (sipp retransmits all but ACK)."""
    lines = [
        f"{method} sip:[service]@[remote_ip]:[remote_port] SIP/2.0",
        "Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]",
        'From: "caller" <sip:[caller]@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]',
        f"To: <sip:[service]@[remote_ip]:[remote_port]>{'[peer_tag_param]' if in_dialog else ''}",
        "Call-ID: [call_id]",
        f"CSeq: {cseq} {method}",
        *(["Contact: <sip:[caller]@[local_ip]:[local_port]>"] if contact else []),
        *extra,
        "Max-Forwards: 70",
    ]
    lines += [f"Content-Type: {content_type}", "Content-Length: [len]", "", body] if body else ["Content-Length: 0", ""]
    retrans = "" if method == "ACK" else ' retrans="500"'
    return f"<send{retrans}><![CDATA[\n" + "\n".join(lines) + "\n]]></send>"


def caller_reply(status: str) -> str:
    """sipp XML that answers the far end's last request from the caller's side."""
    return f"""<send><![CDATA[
SIP/2.0 {status}
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:[caller]@[local_ip]:[local_port]>
Content-Length: 0

]]></send>"""


def uac_scenario(steps: str, *, hang_up: bool = True, may_be_refused: bool = False) -> str:
    """An outgoing call: INVITE with a PCMU + telephone-event offer whose media port is the RTP listener's, then
    `steps` (sipp XML) once answered, then BYE (or, with hang_up=False, wait for the far end's BYE)."""
    if hang_up:
        end = caller_request("BYE", 2) + '\n<recv response="200" crlf="true"/>'
    else:
        end = '<recv request="BYE" timeout="60000"/>\n' + caller_reply("200 OK")
    answered = '<recv response="200" rtd="true" rrs="true"/>'
    refused = ""
    if may_be_refused:  # a refusal (ACKed) ends the call as planned too
        answered = '<recv response="200" optional="true" rtd="true" rrs="true" next="answered"/>\n'
        answered += "\n".join(f'<recv response="{code}" optional="true" next="refused"/>' for code in REFUSED[:-1])
        answered += f'\n<recv response="{REFUSED[-1]}" next="refused"/>\n<label id="answered"/>'
        ack = caller_request("ACK", 1, contact=False)
        refused = f'<nop next="done"/>\n<label id="refused"/>\n{ack}\n<label id="done"/>'
    invite = caller_request("INVITE", 1, in_dialog=False, content_type="application/sdp", body=SDP)
    ack = caller_request("ACK", 1)
    return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="voice-agent caller">
{invite}
<recv response="100" optional="true"/>
<recv response="180" optional="true"/>
<recv response="183" optional="true"/>
{answered}
{ack}
{steps}
{end}
{refused}
</scenario>
"""


UAS_SCENARIO = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="voice-agent callee">
<recv request="INVITE" crlf="true"/>
<send><![CDATA[
SIP/2.0 180 Ringing
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:[local_ip]:[local_port];transport=[transport]>
Content-Length: 0

]]></send>
{answer}
</scenario>
"""

UAS_ANSWER = """<pause milliseconds="{ring_ms}"/>
<send retrans="500"><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:[local_ip]:[local_port];transport=[transport]>
Content-Type: application/sdp
Content-Length: [len]

{sdp}
]]></send>
<recv request="ACK" crlf="true"/>
<recv request="BYE" timeout="{listen_ms}" ontimeout="hangup"/>
<send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]></send>
<label id="hangup"/>
"""

UAS_REJECT = """<pause milliseconds="{ring_ms}"/>
<send><![CDATA[
SIP/2.0 {status}
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]></send>
<recv request="ACK" optional="true"/>
"""


UAS_RING = """<recv request="CANCEL" timeout="{listen_ms}" ontimeout="gone">
  <action><ereg regexp="^CSeq:[ ]*([0-9]+)" search_in="msg" assign_to="cseq,seq"/></action>
</recv>
<send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]></send>
<send><![CDATA[
SIP/2.0 487 Request Terminated
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
CSeq: [$seq] INVITE
Content-Length: 0

]]></send>
<recv request="ACK" optional="true"/>
<label id="gone"/>
"""


def uas_scenario(*, answer: bool = True, status: str = "486 Busy Here", ring_ms: int = 500, listen_ms: int = 30000):
    """The called phone: answers after ring_ms, or refuses with `status`, or (status "") rings until cancelled."""
    if not answer and not status:
        return UAS_SCENARIO.format(answer=UAS_RING.format(listen_ms=listen_ms))
    if answer:
        body = UAS_ANSWER.format(ring_ms=ring_ms, sdp=SDP, listen_ms=listen_ms)
    else:
        body = UAS_REJECT.format(ring_ms=ring_ms, status=status)
    return UAS_SCENARIO.format(answer=body)


@dataclass
class Sipp:
    """One sipp process with its scenario; exposes its exit status and the SIP messages it logged."""

    scenario: str
    args: list[str]
    workdir: Path
    proc: subprocess.Popen | None = None

    def start(self) -> Sipp:
        path = self.workdir / "scenario.xml"
        path.write_text(self.scenario)
        self.proc = subprocess.Popen(
            [sipp_binary(), "-sf", str(path), "-trace_msg", "-trace_err", "-nostdin", *self.args],
            cwd=self.workdir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        return self

    def wait(self, timeout: float) -> int:
        assert self.proc
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def messages(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.workdir.glob("*_messages.log")))

    def errors(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.workdir.glob("*_errors.log")))

    def timeline(self) -> list[tuple[float, str, str]]:
        """(wall-clock time, "sent" or "received", first line) of each SIP message sipp logged."""
        from datetime import datetime

        events = []
        for block in self.messages().split("----------------------------------------------- ")[1:]:
            lines = [ln for ln in block.splitlines() if ln.strip()]
            if len(lines) < 3:
                continue
            at = datetime.strptime(lines[0].strip(), "%Y-%m-%d %H:%M:%S.%f").timestamp()  # sipp logs local time
            events.append((at, "sent" if "message sent" in lines[1] else "received", lines[2].strip()))
        return events

    def invite_outcomes(self) -> dict[str, int]:
        """Call-ID -> the final status its INVITE got."""
        outcomes: dict[str, int] = {}
        for block in self.messages().split("----------------------------------------------- "):
            if "message received" not in block or "INVITE" not in block:
                continue
            status = re.search(r"^SIP/2\.0 (\d{3})", block, re.MULTILINE)
            cseq = re.search(r"^CSeq:\s*\d+ INVITE", block, re.MULTILINE | re.IGNORECASE)
            call_id = re.search(r"^Call-ID:\s*(\S+)", block, re.MULTILINE | re.IGNORECASE)
            if status and cseq and call_id and int(status.group(1)) >= 200:
                outcomes[call_id.group(1)] = int(status.group(1))
        return outcomes

    def received(self, first_line: str) -> bool:
        """Whether sipp received a message starting with this (e.g. 'BYE' or 'SIP/2.0 486')."""
        blocks = self.messages().split("----------------------------------------------- ")
        return any("message received" in b and any(ln.startswith(first_line) for ln in b.splitlines()) for b in blocks)


def accept_refer(timeout_s: float) -> str:
    """sipp XML: accept the transfer the far end asks for (202, then a NOTIFY that the new call was answered)."""
    notify = caller_request(
        "NOTIFY",
        3,
        extra=("Event: refer", "Subscription-State: terminated;reason=noresource"),
        content_type="message/sipfrag;version=2.0",
        body="SIP/2.0 200 OK",
    )
    refer = f'<recv request="REFER" timeout="{int(timeout_s * 1000)}"/>'
    return f'{refer}\n{caller_reply("202 Accepted")}\n{notify}\n<recv response="200"/>'


def play(pcap: Path, seconds: float) -> str:
    """sipp XML that plays a pcap into the call and waits for it to finish."""
    return (
        f'<nop><action><exec play_pcap_audio="{pcap}"/></action></nop>\n'
        f'<pause milliseconds="{int(seconds * 1000) + 100}"/>'
    )


def pause(seconds: float) -> str:
    return f'<pause milliseconds="{int(seconds * 1000)}"/>'


def free_udp_port() -> int:
    return free_port()
