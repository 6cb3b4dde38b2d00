"""Echo mode: plays the caller's own audio back after a short delay, to check a microphone and the
network path without any model. Chosen per call through the dispatch metadata {"mode": "echo"}."""

from __future__ import annotations

import logging

from livekit import rtc
from livekit.agents import AutoSubscribe, JobContext

logger = logging.getLogger("agent.echo")

SAMPLE_RATE = 48000
FRAME_MS = 10


async def run(ctx: JobContext, delay_s: float = 0.5) -> None:
    await ctx.connect(auto_subscribe=AutoSubscribe.AUDIO_ONLY)
    # The queue holds the delay: it starts with `delay_s` of silence and each caller frame joins its end.
    source = rtc.AudioSource(SAMPLE_RATE, 1, queue_size_ms=int(delay_s * 1000) + 200)
    track = rtc.LocalAudioTrack.create_audio_track("echo", source)
    options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
    await ctx.room.local_participant.publish_track(track, options)
    await ctx.room.local_participant.set_attributes({"lk.agent.state": "listening"})
    silence = rtc.AudioFrame.create(SAMPLE_RATE, 1, SAMPLE_RATE * FRAME_MS // 1000)
    for _ in range(int(delay_s * 1000 / FRAME_MS)):
        await source.capture_frame(silence)

    participant = await ctx.wait_for_participant()
    logger.info("echo test started")
    stream = rtc.AudioStream.from_participant(
        participant=participant,
        track_source=rtc.TrackSource.SOURCE_MICROPHONE,
        sample_rate=SAMPLE_RATE,
        num_channels=1,
    )
    async for event in stream:
        await source.capture_frame(event.frame)
    logger.info("echo test ended")
    ctx.shutdown("echo test ended")
