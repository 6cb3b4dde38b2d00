"""Deepgram streaming STT (livekit-plugins-deepgram, as `pipeline.build_stt` builds it) against a local stand-in that
speaks Deepgram's live wire protocol: what the plugin sends (options, key, audio), the interim and final transcripts
it turns the answers into, and a whole voice turn through an AgentSession with no room."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlsplit

import numpy as np
import pytest
from livekit import rtc
from livekit.agents import Agent, AgentSession, APIConnectOptions, APIError, llm, stt, utils
from livekit.plugins import deepgram

from agent import pipeline
from agent.providers.hibari_tts import load_hibari
from agent.settings import AgentSettings
from tests.agent.test_barge_in_audio import RealtimeSpeaker, ScriptedMic, newest_user_text, wait_until
from tests.support.deepgram_standin import DeepgramStandIn
from tests.support.scripted_llm import ScriptedLLM
from tests.support.speech import SAMPLE_RATE, speak
from tests.support.stt_stream import FRAME_S, listen, silence, texts

pytestmark = pytest.mark.models  # the session test loads Silero and hibari

TRANSCRIPT = "Could you tell me what the weather will be like in Paris this weekend?"
REPLY = "It will be sunny in Paris all weekend."


@pytest.fixture(autouse=True)
async def http_session() -> AsyncIterator[None]:
    """The plugin takes its aiohttp session from the job context; outside a worker this stands in for it."""
    async with utils.http_context.open():
        yield


@pytest.fixture
def standin() -> Iterator[DeepgramStandIn]:
    server = DeepgramStandIn(transcript=TRANSCRIPT, api_key="dg-secret").start()
    yield server
    server.stop()


def deepgram_settings(standin: DeepgramStandIn) -> AgentSettings:
    return AgentSettings(
        _env_file=None, deepgram_api_key="dg-secret", deepgram_base_url=standin.url, provider_fallback=False
    )


@pytest.mark.timeout(60)
async def test_the_plugin_streams_interim_and_final_transcripts(standin):
    recognizer = pipeline.build_stt(deepgram_settings(standin))
    assert isinstance(recognizer, deepgram.STT)  # provider_fallback=False: the plugin itself
    assert recognizer.capabilities.streaming and recognizer.capabilities.interim_results

    phrase = speak(TRANSCRIPT)
    audio = np.concatenate([silence(0.5), phrase, silence(1.0)])
    pushed = time.monotonic()
    events = await listen(recognizer, audio)
    kinds = [ev.type for _, ev in events if ev.type != stt.SpeechEventType.RECOGNITION_USAGE]

    # START_OF_SPEECH, interim transcripts while the phrase plays, one final, END_OF_SPEECH (speech_final).
    assert kinds[0] == stt.SpeechEventType.START_OF_SPEECH, kinds
    assert kinds[-1] == stt.SpeechEventType.END_OF_SPEECH, kinds
    assert texts(events, stt.SpeechEventType.FINAL_TRANSCRIPT) == [TRANSCRIPT]
    interims = texts(events, stt.SpeechEventType.INTERIM_TRANSCRIPT)
    first_final = kinds.index(stt.SpeechEventType.FINAL_TRANSCRIPT)
    assert len(interims) >= 3 and kinds.index(stt.SpeechEventType.INTERIM_TRANSCRIPT) < first_final, kinds
    assert all(TRANSCRIPT.startswith(t) for t in interims), interims
    assert [len(t) for t in interims] == sorted(len(t) for t in interims), interims  # a growing prefix
    interim_times = [at for at, ev in events if ev.type == stt.SpeechEventType.INTERIM_TRANSCRIPT]
    speech_end = pushed + 0.5 + len(phrase) / SAMPLE_RATE
    assert interim_times[0] < speech_end - 1.0, "interim words should arrive while the person is still speaking"
    final = next(ev for _, ev in events if ev.type == stt.SpeechEventType.FINAL_TRANSCRIPT).alternatives[0]
    assert final.language == "en" and final.confidence > 0.9
    assert [w for w in final.words] == TRANSCRIPT.split()  # punctuated words, as the transcript has them
    assert 0.3 < final.start_time < final.end_time <= len(audio) / SAMPLE_RATE

    # What the plugin sent: one connection to /v1/listen, with the key and the options it claims.
    assert len(standin.connections) == 1, [c.query for c in standin.connections]
    conn = standin.connections[0]
    assert conn.path == "/v1/listen"
    assert conn.headers["Authorization"] == "Token dg-secret"
    assert conn.headers["Upgrade"].lower() == "websocket"
    q = conn.query
    assert q["model"] == "nova-3" and q["language"] == "en"
    assert q["encoding"] == "linear16" and q["sample_rate"] == str(SAMPLE_RATE) and q["channels"] == "1"
    assert q["interim_results"] == "true" and q["vad_events"] == "true" and q["punctuate"] == "true"
    assert q["endpointing"] == "25"  # the plugin's default; the stand-in ends utterances on its own 300 ms
    assert "utterance_end_ms" not in q and not conn.sent_of("UtteranceEnd")
    print("query sent by the plugin:", q)

    # The audio: 16-bit mono at 16 kHz, all of it (the plugin sends 50 ms binary frames), and it is the audio pushed.
    assert len(conn.audio) == pytest.approx(len(audio) * 2, abs=SAMPLE_RATE * 2 * 0.05)
    assert conn.audio_frames == pytest.approx(len(audio) / (SAMPLE_RATE * 0.05), abs=2)
    received = np.frombuffer(bytes(conn.audio[: len(audio) * 2]), dtype=np.int16)
    assert np.array_equal(received, audio[: len(received)])

    # The plugin's control messages: a KeepAlive at the start, then Finalize and CloseStream at end of input.
    types = conn.message_types
    assert types[0] == "KeepAlive" and types[-2:] == ["Finalize", "CloseStream"], types
    assert conn.close_reason == "close_stream"
    assert [m["type"] for m in conn.sent][0] == "SpeechStarted" and conn.sent[-1]["type"] == "Metadata"


@pytest.mark.timeout(30)
async def test_utterance_end_when_the_client_asks_for_it(standin):
    recognizer = deepgram.STT(api_key="dg-secret", base_url=standin.url, language="en", utterance_end_ms=1000)
    audio = np.concatenate([silence(0.3), speak("Hello there."), silence(1.5)])
    events = await listen(recognizer, audio, realtime=False)
    assert texts(events, stt.SpeechEventType.FINAL_TRANSCRIPT) == [TRANSCRIPT]
    conn = standin.connections[0]
    assert conn.query["utterance_end_ms"] == "1000"
    sent = [m["type"] for m in conn.sent]
    # ... the final, UtteranceEnd after 1 s without words, the empty answer to Finalize, Metadata at CloseStream
    assert sent[:1] == ["SpeechStarted"] and sent[-3:] == ["UtteranceEnd", "Results", "Metadata"], sent
    flushed = conn.sent[-2]
    assert flushed["from_finalize"] and flushed["channel"]["alternatives"][0]["transcript"] == ""
    final = [m for m in conn.sent_of("Results") if m["is_final"]][0]
    utterance_end = conn.sent_of("UtteranceEnd")[0]
    assert utterance_end["last_word_end"] == final["channel"]["alternatives"][0]["words"][-1]["end"]


@pytest.mark.timeout(30)
async def test_a_wrong_key_is_refused_with_401(standin):
    recognizer = deepgram.STT(api_key="wrong", base_url=standin.url)
    stream = recognizer.stream(conn_options=pipeline_conn_options())
    stream.push_frame(rtc.AudioFrame(silence(0.1).tobytes(), SAMPLE_RATE, 1, 1600))
    stream.end_input()
    with pytest.raises(Exception) as err:
        async for _ in stream:
            pass
    await stream.aclose()
    assert "401" in str(err.value) or getattr(err.value, "status_code", None) == 401, repr(err.value)
    assert "wrong" not in str(err.value)  # the key stays out of the error
    assert standin.connections and all(c.close_reason == "unauthorized" for c in standin.connections)


def pipeline_conn_options() -> APIConnectOptions:
    return APIConnectOptions(max_retry=0, timeout=5.0)


@pytest.mark.timeout(60)
async def test_killing_the_service_mid_stream_fails_the_plugin(standin):
    """`kill()` drops the socket and refuses reconnects: the plugin's stream fails (what FallbackAdapter acts on)."""
    recognizer = pipeline.build_stt(deepgram_settings(standin))
    # one retry: the reconnect is refused too
    stream = recognizer.stream(conn_options=APIConnectOptions(max_retry=1, retry_interval=0.1, timeout=5.0))
    events: list[stt.SpeechEvent] = []

    async def collect() -> None:
        async for ev in stream:
            events.append(ev)

    reader = asyncio.create_task(collect())
    phrase = speak(TRANSCRIPT)
    step = int(SAMPLE_RATE * FRAME_S)
    for n, start in enumerate(range(0, len(phrase), step)):
        if reader.done():  # the stream failed and closed
            break
        chunk = phrase[start : start + step]
        stream.push_frame(rtc.AudioFrame(chunk.tobytes(), SAMPLE_RATE, 1, len(chunk)))
        await asyncio.sleep(FRAME_S)
        if n == 50:  # 1 s in, mid-phrase
            assert len(standin.live) == 1
            standin.kill()
    with pytest.raises(Exception) as err:
        await asyncio.wait_for(reader, 15)
    await stream.aclose()
    assert isinstance(err.value, APIError) and "failed to connect to deepgram" in str(err.value), err.value
    assert len(standin.connections) == 1  # the reconnect never got through
    assert standin.connections[0].close_reason == "killed" and not standin.live
    assert stt.SpeechEventType.FINAL_TRANSCRIPT not in [ev.type for ev in events]
    standin.revive()  # listening again: a new stream gets through
    again = await listen(recognizer, np.concatenate([speak("Hello there."), silence(0.6)]))
    assert texts(again, stt.SpeechEventType.FINAL_TRANSCRIPT) == [TRANSCRIPT]


@pytest.mark.timeout(90)
async def test_a_spoken_question_reaches_the_llm_and_the_reply_is_played(standin):
    settings = deepgram_settings(standin)
    load_hibari(settings.tts_voice, settings.cpu_threads)  # warm, so the reply does not wait for the model to load
    vad = pipeline.build_vad(settings)
    shared = pipeline.Shared(vad=vad, notes=None, memory=None)  # type: ignore[arg-type]

    def reply(chat_ctx: llm.ChatContext) -> str:
        return REPLY if "weather" in newest_user_text(chat_ctx).lower() else "Sorry, I did not catch that."

    scripted = ScriptedLLM(reply)
    recognizer = pipeline.build_stt(settings, vad)
    assert isinstance(recognizer, deepgram.STT)
    session = AgentSession(
        vad=vad,
        stt=recognizer,
        llm=scripted,
        tts=pipeline.build_tts(AgentSettings(_env_file=None)),  # the local hibari, sentence by sentence
        turn_handling=pipeline.turn_handling(settings, shared),
    )
    mic, speaker = ScriptedMic(), RealtimeSpeaker()
    transcripts: list[tuple[bool, str]] = []
    session.on("user_input_transcribed", lambda ev: transcripts.append((ev.is_final, ev.transcript)))
    session.input.audio = mic
    session.output.audio = speaker
    await session.start(Agent(instructions="You are a helpful voice assistant."))
    try:
        await asyncio.sleep(0.5)
        clip = mic.play(speak(TRANSCRIPT))
        await asyncio.wait_for(clip.done.wait(), 15)
        await wait_until(lambda: len(speaker.segments) >= 1, 20, "the agent's reply to start playing")
        answer = speaker.segments[0]
        await wait_until(lambda: answer.finished_at is not None, 20, "the reply to finish playing")

        assert scripted.calls, "the LLM was never asked"
        assert newest_user_text(scripted.calls[0]) == TRANSCRIPT
        assert (True, TRANSCRIPT) in transcripts, transcripts
        assert any(not final for final, _ in transcripts), transcripts  # interim transcripts reached the session
        assert answer.interrupted is False and answer.pushed > 1.0, answer
        assert answer.played == pytest.approx(answer.pushed, abs=0.011)
        assert answer.started_at > clip.ended_at

        def replies() -> list[str]:
            return [i.text_content for i in session.history.items if i.type == "message" and i.role == "assistant"]

        # The reply enters the history just after its playout ends.
        await wait_until(lambda: replies(), 10, "the reply in the conversation history")
        assert replies()[-1].strip() == REPLY, replies()
        conn = standin.connections[0]
        assert urlsplit(settings.deepgram_base_url).path == conn.path
        assert conn.headers["Authorization"] == "Token dg-secret"
        assert conn.sent_of("Results") and any(m["is_final"] for m in conn.sent_of("Results"))
    finally:
        await session.aclose()
        await speaker.aclose()
