"""One typed settings object for the agent worker, read from the environment (and `.env`)."""

from __future__ import annotations

import sys
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class AgentSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    livekit_url: str = "ws://127.0.0.1:7880"
    livekit_api_key: str = "devkey"
    livekit_api_secret: str = Field(default="devsecret-local-only-change-me-0123456789", repr=False)
    agent_name: str = "voice-agent"
    # The worker's health/HTTP port (0 picks a free one) and the interface it listens on.
    agent_http_port: int = 8081
    agent_http_host: str = "127.0.0.1"
    # Prometheus metrics of the worker and its sessions at http://AGENT_HTTP_HOST:AGENT_METRICS_PORT/metrics (0: off).
    agent_metrics_port: int = 9464

    # STT: "base" (packaged multilingual Whisper base), "tiny.en" (packaged), or any faster-whisper
    # model name/path (downloaded on first use where the hub is reachable).
    stt_model: str = "base"
    stt_language: str = "en"
    stt_beam_size: int = Field(default=5, ge=1, le=10)
    # Interim transcripts while the user speaks and a final one decoded during the first silence (off: decode
    # each utterance after the VAD says it ended).
    stt_streaming: bool = True
    # Seconds of speech between interim transcripts (each also lets the local LLM read the words so far ahead).
    stt_interim_interval_s: float = Field(default=1.0, ge=0.2, le=10.0)

    # Providers per role. "auto": the cloud one whose key (or base URL) is set, the local one otherwise.
    stt_provider: Literal["auto", "deepgram", "openai", "local"] = "auto"
    tts_provider: Literal["auto", "elevenlabs", "openai", "local"] = "auto"
    # A failing cloud provider hands the turn to the local one (livekit-agents FallbackAdapter), per role.
    provider_fallback: bool = True

    # Deepgram streaming STT (interim results). The base URL is for a self-hosted or proxied Deepgram.
    deepgram_api_key: str | None = Field(default=None, repr=False)
    deepgram_base_url: str = "https://api.deepgram.com/v1/listen"
    deepgram_model: str = "nova-3"
    # ElevenLabs streaming TTS.
    eleven_api_key: str | None = Field(default=None, repr=False)
    elevenlabs_base_url: str | None = None
    elevenlabs_voice_id: str = "bIHbv24MWmeRgasZH58o"
    elevenlabs_model: str = "eleven_turbo_v2_5"

    # STT from an OpenAI-compatible speech-to-text server (/v1/audio/transcriptions) when STT_BASE_URL is set.
    stt_base_url: str | None = None
    stt_api_key: str | None = Field(default=None, repr=False)
    stt_remote_model: str = "whisper-1"

    # LLM, "auto": any OpenAI-compatible server at LLM_BASE_URL (with LLM_API_KEY); else OpenAI itself when
    # OPENAI_API_KEY is set (livekit-plugins-openai's own variable; OPENAI_BASE_URL moves it, as in OpenAI's SDK);
    # else the local llama.cpp model.
    llm_provider: Literal["auto", "openai", "local"] = "auto"
    llm_base_url: str | None = None
    llm_model: str = "gpt-4o-mini"
    llm_api_key: str | None = Field(default=None, repr=False)
    openai_api_key: str | None = Field(default=None, repr=False)
    openai_base_url: str = "https://api.openai.com/v1"
    llm_gguf_path: str | None = None
    # Or a GGUF to download once (with a progress bar) into the model cache, e.g. a huggingface.co resolve URL.
    llm_gguf_url: str | None = None
    llm_context_tokens: int = Field(default=4096, ge=512)
    llm_max_tokens: int = Field(default=200, ge=16)
    llm_temperature: float = Field(default=0.2, ge=0.0, le=2.0)

    # TTS: hibari's packaged voice, or an OpenAI-compatible speech server (/v1/audio/speech) when TTS_BASE_URL is set.
    # hibari's voices: "heart" is packaged; emma, fenrir, fable and kore are downloaded once on first use (with a
    # progress bar, sha256-checked) from Hugging Face, or from TTS_VOICE_BASE_URL (a mirror of hibari's voices/ folder).
    tts_voice: str = "heart"
    tts_voice_base_url: str | None = None
    tts_speed: float = Field(default=1.0, gt=0.25, le=4.0)
    tts_base_url: str | None = None
    tts_api_key: str | None = Field(default=None, repr=False)
    tts_remote_model: str = "tts-1"
    tts_remote_voice: str = "alloy"

    # Turn taking: "text" = VAD silence, held while the transcript stops mid-sentence ("...a table at"); "model" =
    # livekit's local audio end-of-turn model + VAD; "vad" = VAD silence only.
    turn_detection: Literal["text", "model", "vad"] = "text"
    vad_min_silence_s: float = Field(default=0.35, ge=0.1, le=3.0)
    endpointing_min_delay_s: float = Field(default=0.2, ge=0.0, le=5.0)
    endpointing_max_delay_s: float = Field(default=2.0, ge=0.1, le=10.0)
    # Barge-in: how long the user must speak over the agent to stop it, and whether the agent resumes
    # when what stopped it turns out not to be speech (a cough, a door) within the timeout.
    interrupt_min_speech_s: float = Field(default=0.3, ge=0.05, le=5.0)
    resume_false_interruption: bool = True
    false_interruption_timeout_s: float = Field(default=1.5, ge=0.2, le=10.0)

    cpu_threads: int = Field(default=2, ge=1)
    # Threads the local LLM writes a reply with, token by token (prompts are read with CPU_THREADS).
    llm_threads: int = Field(default=2, ge=1)
    # Sessions one worker takes before it reports itself full (local models share the CPU; remote providers
    # let a worker carry many more).
    max_sessions: int = Field(default=4, ge=1, le=1000)
    # livekit-server's `agents.target_load` (livekit.yaml): it offers calls only to workers whose load is below it, so
    # the worker reports this value exactly when its last slot is taken.
    livekit_target_load: float = Field(default=0.7, gt=0.0, le=1.0)
    # The conversation the LLM sees is the last N items (plus the instructions): bounded prompt, bounded memory.
    context_max_items: int = Field(default=24, ge=4, le=500)
    # Memory across calls: how many earlier exchanges with the same caller start the next call (0: none).
    memory_turns: int = Field(default=3, ge=0, le=20)

    # Who the agent is: a persona from agent/personas.yaml (a call may ask for another in its dispatch metadata).
    persona: str = "assistant"
    # Skills (function tools) the operator allows, comma-separated names from agent/skills; each persona
    # offers those of its own skills that are allowed here.
    agent_skills: str = "time,calculator,units,notes,end_call"
    # Serve requests a parser understands exactly (time somewhere, arithmetic, conversions, notes, goodbye)
    # without an LLM round trip; anything else goes to the LLM.
    skill_fast_path: bool = True
    # On the fast path, also understand requests in other words (agent/skills/intents.py: sentence embeddings over
    # example phrasings, then the slots read exactly), and decline what no skill does without an LLM round.
    intent_layer: bool = True
    # The time zone of "what time is it?" asked without a place (an IANA name); default: TZ, else the system's.
    home_timezone: str = Field(default_factory=lambda: _system_timezone())
    # Where the agent keeps what outlives a call (notes): a SQLite file in this folder.
    data_dir: Path = Path.home() / ".local" / "share" / "voice-agent"

    # Phone calls (agent/phone.py). Keypad menu: digits -> the request they stand for, asked as if spoken (JSON).
    phone_keypad: dict[str, str] = {
        "1": "What time is it?",
        "2": "What is the date today?",
        "3": "What are my notes?",
        "9": "Goodbye.",
    }
    # After the last digit, how long to wait for more before acting on them (# acts at once).
    phone_digit_timeout_s: float = Field(default=1.5, gt=0.0, le=10.0)
    # Where the agent may transfer a call (SIP REFER): name -> number or SIP URI, JSON, e.g. {"operator": "+15550111"}.
    # Empty: no transfer tool. Only these: a caller cannot make the agent dial a number of their choosing.
    phone_transfer_targets: dict[str, str] = {}

    # Rooms with several people (agent/group.py). "auto": group handling when more than one human is in the room as
    # the agent joins, or when the dispatch metadata asks for {"mode": "group"}; "single": always the 1:1 path (one
    # linked participant); "group": always group handling.
    agent_room_mode: Literal["auto", "single", "group"] = "auto"
    # The names the agent answers to in a group, comma-separated (the first is how it introduces itself); matched
    # anywhere in an utterance, tolerant to STT spelling.
    group_agent_names: str = "Jarvis"
    # When the agent answers in a group: "addressed" (by its name, a lone human's question, or a follow-up from the
    # person it just answered) or "hand_raised" (only people who raised their hand, by RPC or attribute).
    group_answer_policy: Literal["addressed", "hand_raised"] = "addressed"
    # After answering someone, how long their next question counts as a follow-up without the agent's name (0: off).
    group_follow_up_s: float = Field(default=8.0, ge=0.0, le=120.0)
    # A person's turn ends after this much silence (their transcripts until then are one utterance); after a
    # complete question ("...?") after ENDPOINTING_MIN_DELAY_S.
    group_end_of_turn_s: float = Field(default=0.6, ge=0.0, le=5.0)
    # Interim transcripts of each person with the local Whisper (it re-decodes a talker's utterance every second;
    # off, each utterance is decoded once at its end, which keeps 2 cores free for the person calling the agent).
    # Cloud STTs always send them.
    group_interim_transcripts: bool = False
    # Greet people who join mid-session by name (joins within a moment are greeted together).
    group_greet_newcomers: bool = True
    # How long the agent stays in a room with no human left before it leaves.
    group_empty_grace_s: float = Field(default=20.0, ge=0.0, le=3600.0)
    # Audio quieter than this (dBFS) is not run through the VAD, so silent listeners cost little CPU; speech opens
    # the gate with half a second of audio before it. -100 sends everything.
    group_silence_gate_dbfs: float = Field(default=-55.0, ge=-100.0, le=-20.0)
    # The participant attribute whose value "moderator" lets someone mute and unmute the agent by RPC.
    group_role_attribute: str = "role"

    @field_validator("openai_base_url", mode="before")
    @classmethod
    def _default_when_empty(cls, value: object) -> object:
        return value or "https://api.openai.com/v1"

    @field_validator("group_agent_names")
    @classmethod
    def _some_name(cls, value: str) -> str:
        if not any(name.strip() for name in value.split(",")):
            raise ValueError("give the agent at least one name to answer to, e.g. GROUP_AGENT_NAMES=Jarvis")
        return value

    @property
    def agent_names(self) -> list[str]:
        return [name.strip() for name in self.group_agent_names.split(",") if name.strip()]

    @property
    def skills(self) -> list[str]:
        return [name.strip() for name in self.agent_skills.split(",") if name.strip()]

    @property
    def llm_choice(self) -> Literal["openai", "local"]:
        if self.llm_provider != "auto":
            return self.llm_provider
        return "openai" if self.llm_base_url or self.openai_api_key else "local"

    @property
    def llm_endpoint(self) -> tuple[str, str | None]:
        """The remote LLM's base URL and key: LLM_BASE_URL's server, else OpenAI's."""
        return self._endpoint(self.llm_base_url, self.llm_api_key)

    @property
    def stt_endpoint(self) -> tuple[str, str | None]:
        return self._endpoint(self.stt_base_url, self.stt_api_key)

    @property
    def tts_endpoint(self) -> tuple[str, str | None]:
        return self._endpoint(self.tts_base_url, self.tts_api_key)

    def _endpoint(self, base_url: str | None, api_key: str | None) -> tuple[str, str | None]:
        if base_url:
            return base_url, api_key or self.openai_api_key
        return self.openai_base_url, api_key or self.openai_api_key

    @property
    def stt_choice(self) -> str:
        if self.stt_provider != "auto":
            return self.stt_provider
        return "deepgram" if self.deepgram_api_key else "openai" if self.stt_base_url else "local"

    @property
    def tts_choice(self) -> str:
        if self.tts_provider != "auto":
            return self.tts_provider
        return "elevenlabs" if self.eleven_api_key else "openai" if self.tts_base_url else "local"

    def missing_keys(self) -> list[str]:
        """What an explicitly chosen cloud provider lacks, as lines for the operator."""
        missing = []
        if self.stt_choice == "deepgram" and not self.deepgram_api_key:
            missing.append("STT_PROVIDER=deepgram needs DEEPGRAM_API_KEY")
        if self.stt_choice == "openai" and not (self.stt_base_url or self.openai_api_key):
            missing.append("STT_PROVIDER=openai needs OPENAI_API_KEY (OpenAI) or STT_BASE_URL (any compatible server)")
        if self.tts_choice == "elevenlabs" and not self.eleven_api_key:
            missing.append("TTS_PROVIDER=elevenlabs needs ELEVEN_API_KEY")
        if self.llm_choice == "openai" and not (self.llm_base_url or self.openai_api_key):
            missing.append("LLM_PROVIDER=openai needs OPENAI_API_KEY (OpenAI) or LLM_BASE_URL (any compatible server)")
        if self.tts_choice == "openai" and not (self.tts_base_url or self.openai_api_key):
            missing.append("TTS_PROVIDER=openai needs OPENAI_API_KEY (OpenAI) or TTS_BASE_URL (any compatible server)")
        return missing


def _system_timezone() -> str:
    import os

    if zone := os.environ.get("TZ", "").lstrip(":"):
        return zone
    try:
        return Path("/etc/timezone").read_text().strip() or "UTC"
    except OSError:
        return "UTC"


@lru_cache(maxsize=1)
def get_settings() -> AgentSettings:
    """The settings; a bad value stops the process with one line per problem, not a traceback."""
    try:
        return AgentSettings()
    except ValidationError as exc:
        for error in exc.errors():
            name = "_".join(str(part) for part in error["loc"]).upper()
            got = "" if "KEY" in name or "SECRET" in name else f" (got {error.get('input')!r})"
            print(f"agent: {name}: {error['msg']}{got}", file=sys.stderr)
        sys.exit(2)
