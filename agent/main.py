"""The voice agent worker: joins each room it is dispatched to and talks with the people there.

Run: `uv run python -m agent.main start` (LIVEKIT_URL, LIVEKIT_API_KEY, LIVEKIT_API_SECRET from the env).
"""

from __future__ import annotations

import json
import logging
import sys

from livekit.agents import (
    Agent,
    AgentServer,
    AgentSession,
    JobContext,
    JobExecutorType,
    JobProcess,
    ModelSettings,
    RunContext,
    cli,
    function_tool,
    llm,
    utils,
)
from livekit.agents.voice.room_io import RoomOptions

from agent import echo, memory, personas, pipeline, skills
from agent.settings import get_settings
from agent.skills import router

logger = logging.getLogger("agent")

GOODBYE = "Goodbye, and thanks for calling!"


class PersonaAgent(Agent):
    """An agent as a persona from agent/personas.yaml describes it (PERSONA picks the default one)."""

    def __init__(self, persona: personas.Persona | None = None, chat_ctx: llm.ChatContext | None = None) -> None:
        settings = get_settings()
        self.persona = persona or personas.get(settings.persona)
        names = [name for name in self.persona.skills if name in settings.skills]
        tools = skills.tools_for(names)
        hints = skills.instructions_for(names)
        if self.persona.hands_over_to:
            tools.append(transfer_tool(self.persona.hands_over_to))
        super().__init__(instructions=f"{self.persona.instructions} {hints}".strip(), tools=tools, chat_ctx=chat_ctx)
        self._routed: dict[str, str] = {}  # call id -> tool, for calls the fast path made

    async def on_enter(self) -> None:
        # A fixed greeting: no LLM round trip, and it stays out of the chat context.
        self.session.say(self.persona.greeting, add_to_chat_ctx=False)

    async def llm_node(self, chat_ctx: llm.ChatContext, tools: list[llm.Tool], model_settings: ModelSettings):
        """The fast path first: a request the skills router understands exactly needs no LLM."""
        last = chat_ctx.items[-1] if chat_ctx.items else None
        if get_settings().skill_fast_path and last is not None:
            if last.type == "message" and last.role == "user":
                found = router.route(last.text_content or "", {tool.id for tool in tools})
                if found:
                    call_id = utils.shortuuid("route_")
                    self._routed[call_id] = found.tool
                    call = llm.FunctionToolCall(name=found.tool, arguments=json.dumps(found.arguments), call_id=call_id)
                    yield llm.ChatChunk(id=call_id, delta=llm.ChoiceDelta(role="assistant", tool_calls=[call]))
                    return
            elif last.type == "function_call_output" and last.call_id in self._routed:
                # The tool's own sentence is the answer (or its apology).
                yield GOODBYE if self._routed.pop(last.call_id) == "end_call" else last.output
                return
        # The LLM sees the instructions and the latest items only: a bounded prompt however long the call.
        window = chat_ctx.copy().truncate(max_items=get_settings().context_max_items)
        async for chunk in Agent.default.llm_node(self, window, tools, model_settings):
            yield chunk


class Assistant(PersonaAgent):
    """The default persona."""


def transfer_tool(target: str) -> llm.FunctionTool:
    async def transfer(context: RunContext, reason: str) -> tuple[Agent, str]:
        history = context.session.current_agent.chat_ctx.copy(exclude_instructions=True)
        return PersonaAgent(personas.get(target), chat_ctx=history), f"Transferring you to the {target} now."

    description = f"Hand the caller over to the {target} when their question is for the {target}."
    return function_tool(transfer, name="transfer", description=description)


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
    await ctx.connect()
    caller = await ctx.wait_for_participant()
    session = AgentSession(
        userdata=skills.CallContext(identity=caller.identity, notes=shared.notes, memory=shared.memory),
        vad=shared.vad,  # 1. voice activity: when the user speaks
        stt=pipeline.build_stt(settings),  # 2. speech to text
        llm=pipeline.build_llm(settings),  # 3. the language model, with the agent's tools
        tts=pipeline.build_tts(settings),  # 4. text to speech, sentence by sentence
        turn_handling=pipeline.turn_handling(settings, shared),
    )
    pipeline.log_turn_metrics(session)
    memory.record(session, shared.memory, caller.identity)
    earlier = memory.recap(shared.memory, caller.identity, settings.memory_turns)
    # Talk with the participant whose identity the notes and memories are kept under.
    linked = RoomOptions(participant_identity=caller.identity)
    persona = pipeline.dispatch_options(ctx.job.metadata).get("persona", settings.persona)
    try:
        agent = PersonaAgent(personas.get(str(persona)), chat_ctx=earlier)
    except personas.UnknownPersona as exc:
        logger.warning("%s; using the default persona", exc)
        agent = PersonaAgent(chat_ctx=earlier)
    await session.start(agent=agent, room=ctx.room, room_options=linked)


if __name__ == "__main__":
    pipeline.preflight(settings)
    # Load and warm the models before registering, so no call ever waits for them.
    pipeline.load(settings, warm_agent=Assistant())
    sys.exit(cli.run_app(server))
