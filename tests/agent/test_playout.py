"""Audio voiced before the turn was certain starts playing as soon as livekit forwards its first frame."""

from __future__ import annotations

import asyncio

import numpy as np
from livekit import rtc
from livekit.agents.voice import io

from agent.playout import PlayAtOnce


class RoomLikeSink(io.AudioOutput):
    """Like livekit's room output: frames go through a queue to a task of their own, which starts the playback."""

    def __init__(self) -> None:
        super().__init__(label="sink", capabilities=io.AudioOutputCapabilities(pause=False), sample_rate=24000)
        self.queue: asyncio.Queue[rtc.AudioFrame] = asyncio.Queue()
        self.captured = 0
        self.captured_when_playing: int | None = None
        self.task = asyncio.create_task(self._play())

    async def _play(self) -> None:
        while True:
            await self.queue.get()
            if self.captured_when_playing is None:
                self.captured_when_playing = self.captured
                self.on_playback_started(created_at=0.0)

    async def capture_frame(self, frame: rtc.AudioFrame) -> None:
        await super().capture_frame(frame)
        self.captured += 1
        self.queue.put_nowait(frame)

    def flush(self) -> None:
        super().flush()
        self.on_playback_finished(playback_position=self.captured * 0.02, interrupted=False)

    def clear_buffer(self) -> None:
        pass


async def forward_queued_audio(output: io.AudioOutput, frames: int) -> None:
    """What livekit does once the turn is committed: the audio already voiced goes out frame by frame, all ready."""
    silence = np.zeros(480, dtype=np.int16).tobytes()
    for _ in range(frames):
        await output.capture_frame(rtc.AudioFrame(silence, 24000, 1, 480))
    output.flush()


async def test_the_first_frame_plays_before_the_rest_of_the_queue_is_forwarded():
    sink = RoomLikeSink()
    output = PlayAtOnce(sink)
    started = []
    output.on("playback_started", started.append)
    await forward_queued_audio(output, 150)  # 3 s of a skill's answer (straight into the sink, it plays after all 150)
    await asyncio.sleep(0.01)
    assert sink.captured_when_playing is not None and sink.captured_when_playing <= 2
    assert started, "the start of the playback reaches the head of the chain"
    assert (await asyncio.wait_for(output.wait_for_playout(), 1)).interrupted is False
    sink.task.cancel()
