"""The agent's first audio frame plays the moment the turn is certain.

Audio voiced before the turn is committed (livekit's preemptive TTS) waits in a queue. Once the turn is committed,
livekit forwards that queue through the output chain (the transcript synchronizer, the room output's re-chunking)
in one go, without yielding to the event loop, so the first frame played only once the last one was queued: 16-61 ms
after the commit on a skill's answer (livekit's `playback_latency`), against 0-1 ms when the audio comes later.
`PlayAtOnce`, put at the head of the chain, lets the event loop run after each frame, so the room output starts
playing the first while the rest is forwarded.
"""

from __future__ import annotations

import asyncio

from livekit import rtc
from livekit.agents import AgentSession
from livekit.agents.voice import io


class PlayAtOnce(io.AudioOutput):
    def __init__(self, next_in_chain: io.AudioOutput) -> None:
        super().__init__(
            label="PlayAtOnce",
            capabilities=io.AudioOutputCapabilities(pause=True),
            next_in_chain=next_in_chain,
            sample_rate=next_in_chain.sample_rate,
        )

    async def capture_frame(self, frame: rtc.AudioFrame) -> None:
        await super().capture_frame(frame)
        assert self.next_in_chain is not None
        await self.next_in_chain.capture_frame(frame)
        await asyncio.sleep(0)

    def flush(self) -> None:
        super().flush()
        if self.next_in_chain is not None:
            self.next_in_chain.flush()

    def clear_buffer(self) -> None:
        if self.next_in_chain is not None:
            self.next_in_chain.clear_buffer()


def attach(session: AgentSession) -> None:
    """Puts `PlayAtOnce` at the head of the session's audio output (once; call after the room output is set)."""
    sink = session.output.audio
    if sink is not None and not isinstance(sink, PlayAtOnce):
        session.output.audio = PlayAtOnce(sink)
