"""The voice agent worker: joins each room it is dispatched to and talks with the people there.

Run: `uv run python -m agent.main start` (LIVEKIT_URL, LIVEKIT_API_KEY, LIVEKIT_API_SECRET from the env).
"""

from __future__ import annotations

import logging
import sys

from livekit.agents import (
    Agent,
    AgentServer,
    AgentSession,
    JobContext,
    JobExecutorType,
    JobProcess,
    RunContext,
    ToolError,
    cli,
    function_tool,
)

from agent import echo, pipeline, tools
from agent.settings import get_settings

logger = logging.getLogger("agent")

INSTRUCTIONS = (
    "You are a friendly, helpful voice assistant talking with a person over a voice call. "
    "Reply in one or two short sentences of plain spoken English: no lists, no markdown, no emoji. "
    "When the person asks what time or date it is somewhere, call get_time with that place."
)
GREETING = "Hi! I'm your voice assistant. How can I help?"


class Assistant(Agent):
    def __init__(self) -> None:
        super().__init__(instructions=INSTRUCTIONS)

    async def on_enter(self) -> None:
        # A fixed greeting: no LLM round trip, and it stays out of the chat context.
        self.session.say(GREETING, add_to_chat_ctx=False)

    @function_tool
    async def get_time(self, context: RunContext, location: str) -> str:
        """Get the current local time and date in a city or time zone.

        Args:
            location: the city or IANA time zone name the person asked about
        """
        try:
            return tools.local_time(location)
        except tools.UnknownPlace as exc:
            raise ToolError(str(exc)) from exc


def prewarm(proc: JobProcess) -> None:
    """Every model is loaded once per worker (jobs run as threads and share them)."""
    proc.userdata["shared"] = pipeline.load(get_settings(), warm_agent=Assistant())


settings = get_settings()
server = AgentServer(
    setup_fnc=prewarm,
    job_executor_type=JobExecutorType.THREAD,
    num_idle_processes=1,
    initialize_process_timeout=180,
    drain_timeout=30,  # on SIGTERM, let calls in progress finish for up to 30 s
    load_fnc=pipeline.session_load,
    load_threshold=1.0,
    port=settings.agent_http_port,
    api_key=settings.livekit_api_key,
    api_secret=settings.livekit_api_secret,
    ws_url=settings.livekit_url,
)


@server.rtc_session(agent_name=settings.agent_name)
async def entrypoint(ctx: JobContext) -> None:
    if pipeline.dispatch_options(ctx.job.metadata).get("mode") == "echo":
        await echo.run(ctx)
        return
    shared: pipeline.Shared = ctx.proc.userdata["shared"]
    session = AgentSession(
        vad=shared.vad,  # 1. voice activity: when the user speaks
        stt=pipeline.build_stt(settings),  # 2. speech to text
        llm=pipeline.build_llm(settings),  # 3. the language model, with the agent's tools
        tts=pipeline.build_tts(settings),  # 4. text to speech, sentence by sentence
        turn_handling=pipeline.turn_handling(settings, shared),
    )
    pipeline.log_turn_metrics(session)
    await session.start(agent=Assistant(), room=ctx.room)
    await ctx.connect()


if __name__ == "__main__":
    pipeline.preflight(settings)
    # Load and warm the models before registering, so no call ever waits for them.
    pipeline.load(settings, warm_agent=Assistant())
    sys.exit(cli.run_app(server))
