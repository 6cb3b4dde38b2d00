"""Phone benchmark: calls through livekit-sip on the offline default, with sipp as the phone.

Starts the telephony stack on free loopback ports (Redis, livekit-server, livekit-sip, agent worker, token server)
and places CALLS calls one after another. Each call waits for the greeting, speaks one request (espeak-ng, G.711
u-law RTP from a pcap sipp plays), listens, and hangs up. It prints per call and as medians:
- INVITE -> 200 OK: sipp's own timestamps of the INVITE it sent and the 200 OK it received;
- voice-to-voice over the phone path: from the end of the caller's speech in sipp's RTP stream (the ACK's time plus
  the scenario's pause plus the request's last voiced sample) to the first audible RTP packet that comes back.

Run: `uv run python -m bench.phone` (about 4 minutes on 2 cores). Options: `--calls N`, `--set KEY=VALUE`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from stack.services import Stack, free_port, free_port_block
from tests.support import phone
from tests.support.ports import loopback_ports
from tests.support.speech import SAMPLE_RATE, last_voiced_index, speak

GREETING_S = 6.0  # the scenario's pause before the caller speaks
LISTEN_S = 10.0
REQUESTS = [
    "What is twelve plus thirty?",
    "What time is it in Tokyo?",
    "What is the capital of France?",
    "Convert ten miles to kilometers.",
    "Can you tell me a fun fact about the moon?",
]


def call_once(stack: Stack, workdir: Path, request: str) -> tuple[float, float | None]:
    samples = speak(request)
    spoken_s = last_voiced_index(samples) / SAMPLE_RATE
    pcap, seconds = phone.speech_pcap(workdir / "request.pcap", samples)
    ear = phone.RtpListener().start()
    steps = "\n".join([phone.pause(GREETING_S), phone.play(pcap, seconds), phone.pause(LISTEN_S)])
    args = [
        f"127.0.0.1:{stack.settings.sip_port}",
        *("-s", "+15550100", "-key", "rtp_sink", str(ear.port), "-key", "caller", "+15550199"),
        *("-i", "127.0.0.1", "-p", str(phone.free_udp_port()), "-mp", str(phone.free_udp_port()), "-m", "1"),
    ]
    sipp = phone.Sipp(phone.uac_scenario(steps), args, workdir).start()
    try:
        sipp.wait(GREETING_S + seconds + LISTEN_S + 60)
    finally:
        ear.stop()
    events = sipp.timeline()
    invite = next(t for t, way, line in events if way == "sent" and line.startswith("INVITE"))
    ok = next(t for t, way, line in events if way == "received" and line.startswith("SIP/2.0 200"))
    ack = next(t for t, way, line in events if way == "sent" and line.startswith("ACK"))
    speech_end = ack + GREETING_S + spoken_s
    first = ear.first_voice_after(speech_end + 0.02)
    return ok - invite, (first - speech_end) if first else None


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.phone")
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="agent setting for the run")
    args = parser.parse_args()
    env = {"LLM_BASE_URL": "", "DATA_DIR": tempfile.mkdtemp(prefix="bench-phone-")}
    env.update(dict(item.split("=", 1) for item in args.set))
    rtp = free_port_block(100)
    settings = loopback_ports().model_copy(
        update={
            "redis_port": free_port(),
            "sip_port": phone.free_udp_port(),
            "sip_rtp_port_start": rtp,
            "sip_rtp_port_end": rtp + 99,
        }
    )
    log_dir = Path(tempfile.mkdtemp(prefix="bench-phone-logs-"))
    print(f"starting the telephony stack (logs: {log_dir}) ...", flush=True)
    invites, v2v = [], []
    progress = lambda m: print(f"  {m}", flush=True)  # noqa: E731
    with Stack(settings, env=env, log_dir=log_dir, telephony=True, progress=progress) as stack:
        time.sleep(2)
        print(f"{'call':>4}  {'INVITE->200 ms':>14}  {'voice-to-voice ms':>17}  request", flush=True)
        for i in range(args.calls):
            request = REQUESTS[i % len(REQUESTS)]
            workdir = Path(tempfile.mkdtemp(prefix=f"bench-phone-{i}-"))
            answer_s, reply_s = call_once(stack, workdir, request)
            invites.append(answer_s)
            if reply_s is not None:
                v2v.append(reply_s)
            shown = f"{reply_s * 1000:17.0f}" if reply_s is not None else f"{'no answer':>17}"
            print(f"{i + 1:>4}  {answer_s * 1000:14.0f}  {shown}  {request}", flush=True)
    print()
    print(f"INVITE -> 200 OK    p50 {statistics.median(invites) * 1000:6.0f} ms   max {max(invites) * 1000:6.0f} ms")
    if v2v:
        p95 = float(np.percentile(v2v, 95))
        print(f"voice-to-voice      p50 {statistics.median(v2v) * 1000:6.0f} ms   p95 {p95 * 1000:6.0f} ms")
    print(f"answered {len(v2v)}/{args.calls} calls")
    return 0 if len(v2v) == args.calls else 1


if __name__ == "__main__":
    sys.exit(main())
