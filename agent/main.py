"""The voice agent worker: joins each room it is dispatched to and talks with the people there.

Run: `uv run python -m agent.main start` (LIVEKIT_URL, LIVEKIT_API_KEY, LIVEKIT_API_SECRET from the env).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import sys
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable

from livekit import rtc
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
    get_job_context,
    llm,
    tts,
    utils,
)
from livekit.agents.types import NOT_GIVEN, NotGiven
from livekit.agents.voice import (
    CloseEvent,
    CloseReason,
    ConversationItemAddedEvent,
    FunctionToolsExecutedEvent,
    UserInputTranscribedEvent,
)
from livekit.agents.voice.room_io import AudioInputOptions, RoomOptions

from agent import echo, group, memory, metrics, personas, phone, pipeline, playout, skills, tracing, waterfall
from agent.providers.llama_llm import LlamaLLM
from agent.settings import get_settings
from agent.skills import intents, router
from agent.tts_text import TTS_TEXT_TRANSFORMS, without_markup

logger = logging.getLogger("agent")

GOODBYE = "Goodbye, and thanks for calling!"
ROUTED = "route_"  # call ids of the tool calls the fast path makes
TOOL_ITEMS = ("function_call", "function_call_output")
# Skills the fast path answers at once, in the reply itself: they only read (the clock, arithmetic, units, the notes).
# The others (saving or forgetting notes, hanging up) act as tool calls, once the turn is certain.
ANSWERED_AT_ONCE = frozenset({"get_time", "calculate", "convert_units", "recall_notes"})
# Tools whose result is itself the spoken answer: when the LLM calls one and it succeeds, the result is said as it is,
# with no second LLM round to phrase it (a second round cost 2-4 s here, and a small model garbles the result).
SPOKEN_AS_IS = ANSWERED_AT_ONCE | {"save_note"}
PREFILL_AFTER_S = 0.05
CONSOLE_IDENTITY = "console"  # whose notes and memories a `console` session keeps
NOBODY_CAME_S = 15.0  # a job whose room has no person by then ends (a caller who hung up before the agent came)


def spoken_result(chat_ctx: llm.ChatContext) -> str | None:
    """The answer, when the LLM's latest tool calls all succeeded and each result is a sentence to say as it is."""
    outputs = []
    for item in reversed(chat_ctx.items):
        if item.type != "function_call_output":
            break
        if item.is_error or item.name not in SPOKEN_AS_IS or not item.output:
            return None
        outputs.append(item.output)
    return " ".join(reversed(outputs)) or None


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
        voice: tts.TTS | NotGiven = NOT_GIVEN
        if (self.persona.voice, self.persona.speed) != (settings.tts_voice, 1.0):
            voice = pipeline.build_tts(settings, self.persona.voice, self.persona.speed)
        super().__init__(
            instructions=f"{self.persona.instructions} {hints}".strip(), tools=tools, chat_ctx=chat_ctx, tts=voice
        )
        self._routed: dict[str, str] = {}  # call id -> tool, for calls the fast path made
        self._answered: dict[str, str] = {}  # answer -> tool, for answers the fast path gave itself
        self.request_of: Callable[[str], str] = str  # what the fast path reads of a user message (group: unlabelled)
        self._window_from: str | None = None  # first item of the LLM's window
        self._prefill_next: str | None = None
        self._prefill_task: asyncio.Task | None = None
        self._reply_began = 0.0  # when llm_node last started (time.monotonic)

    async def on_enter(self) -> None:
        playout.attach(self.session)  # audio voiced before the turn was certain plays the moment it is
        self.session.on("conversation_item_added", self._count_answer)
        self.session.on("function_tools_executed", self._tools_ran)
        call = skills.caller_of(self.session).call
        if isinstance(call, phone.Call) and (targets := get_settings().phone_transfer_targets):
            await self.update_tools([*self.tools, phone.transfer_tool(targets)])
        # The call's own prompt (memories of earlier calls, a phone caller's context) is read while the phone rings and
        # the greeting plays, so the first turn reads only the person's words.
        self.prefill_soon()
        if isinstance(call, phone.Call) and not await phone.answered(get_job_context().room, call.participant):
            return
        # A fixed greeting: no LLM round trip, and it stays out of the chat context.
        self.session.say(self.persona.greeting, add_to_chat_ctx=False)

    async def on_exit(self) -> None:
        self.session.off("conversation_item_added", self._count_answer)
        self.session.off("function_tools_executed", self._tools_ran)

    def _tools_ran(self, ev: FunctionToolsExecutedEvent) -> None:
        for call in ev.function_calls:
            if not call.call_id.startswith(ROUTED):
                waterfall.took(self.session, "llm_tool", call.name)

    async def llm_node(self, chat_ctx: llm.ChatContext, tools: list[llm.Tool], model_settings: ModelSettings):
        self._reply_began = time.monotonic()
        waterfall.mark(self.session, "llm_request")
        async for chunk in without_markup(self._reply(chat_ctx, tools, model_settings)):
            if isinstance(chunk, str) or (isinstance(chunk, llm.ChatChunk) and chunk.delta and chunk.delta.content):
                waterfall.mark(self.session, "llm_first_token")
            yield chunk

    async def stt_node(self, audio: AsyncIterable[rtc.AudioFrame], model_settings: ModelSettings):
        heard = waterfall.heard(self.session, metrics.count_frames("in", audio))
        async for event in Agent.default.stt_node(self, heard, model_settings):
            yield event

    async def tts_node(self, text: AsyncIterable[str], model_settings: ModelSettings) -> AsyncIterator[rtc.AudioFrame]:
        audio = Agent.default.tts_node(self, waterfall.timed_text(self.session, text), model_settings)
        async for frame in metrics.count_frames("out", waterfall.timed_audio(self.session, audio)):
            yield frame

    async def _reply(self, chat_ctx: llm.ChatContext, tools: list[llm.Tool], model_settings: ModelSettings):
        """The fast path first: a request the skills router understands exactly needs no LLM."""
        last = chat_ctx.items[-1] if chat_ctx.items else None
        if get_settings().skill_fast_path and last is not None:
            if last.type == "message" and last.role == "user":
                request = self.request_of(last.text_content or "")
                enabled = {tool.id for tool in tools}
                found = (
                    None
                    if intents.two_requests(request)
                    else router.route(request, enabled, get_settings().home_timezone)
                )
                caller = skills.caller_of(self.session)
                if "forget_notes" in enabled and skills.answers_forget_question(self.session, caller, last):
                    # The reply to "delete your notes?": a yes goes to the tool (which checks it again); a no is
                    # answered here (the question lapses by itself: only the very next message can confirm it).
                    if router.is_yes(request):
                        found = router.Route("forget_notes", {})
                    elif router.is_no(request):
                        waterfall.took(self.session, "fast")
                        yield skills.KEPT
                        return
                if found is None and get_settings().intent_layer:
                    understood = await asyncio.to_thread(
                        intents.shared().understand, request, enabled, get_settings().home_timezone
                    )
                    if understood is not None and understood.decline:
                        waterfall.took(self.session, "fast")
                        yield understood.decline
                        return
                    found = understood.route if understood is not None else None
                if found and found.tool in ANSWERED_AT_ONCE and (answer := await self._answer(found, tools)):
                    waterfall.took(self.session, "fast", found.tool)
                    yield answer
                    return
                if found:
                    waterfall.took(self.session, "fast", found.tool)
                    call_id = utils.shortuuid(ROUTED)
                    self._routed[call_id] = found.tool
                    call = llm.FunctionToolCall(name=found.tool, arguments=json.dumps(found.arguments), call_id=call_id)
                    yield llm.ChatChunk(id=call_id, delta=llm.ChoiceDelta(role="assistant", tool_calls=[call]))
                    return
            elif last.type == "function_call_output" and last.call_id in self._routed:
                # The tool's own sentence is the answer (or its apology); an end_call that found no goodbye in the
                # person's words leaves the answer to the LLM (which is not shown the routed call).
                tool = self._routed.pop(last.call_id)
                if last.output not in skills.FOR_THE_LLM:
                    yield GOODBYE if tool == "end_call" else last.output
                    return
        if answer := spoken_result(chat_ctx):
            yield answer
            return
        waterfall.took(self.session, "llm")
        async for chunk in Agent.default.llm_node(self, self.llm_view(chat_ctx), tools, model_settings):
            yield chunk

    async def _answer(self, found: router.Route, tools: list[llm.Tool]) -> str | None:
        """A skill that only reads, run now: its sentence is the reply, with no tool call for the turn to wait on.
        When the reply began on a preflight transcript, it is spoken the moment the turn is certain."""
        tool = next((t for t in tools if isinstance(t, llm.FunctionTool) and t.id == found.tool), None)
        if tool is None:
            return None
        try:
            answer = str(await tool(self.session, **found.arguments))
        except Exception:  # the tool call path says sorry as the tool (or livekit, for a crash) words it
            return None
        self._answered[answer] = found.tool
        return answer

    def _count_answer(self, ev: ConversationItemAddedEvent) -> None:
        """Counts a fast-path answer when it is spoken, not when it is prepared (a reply begun on a preflight
        transcript may be dropped)."""
        if ev.item.type == "message" and ev.item.role == "assistant":
            if tool := self._answered.pop(ev.item.text_content or "", None):
                metrics.tool_called(tool, "ok", "fast_path")
            self._answered.clear()

    def llm_view(self, chat_ctx: llm.ChatContext) -> llm.ChatContext:
        """What the LLM is shown: the instructions and a window of the latest items, without the fast path's
        tool calls (its answers stay). The window moves in steps of half its size, so the prompt's start stays
        the same for many turns and the model finds it cached."""
        items = [i for i in chat_ctx.items if not (i.type in TOOL_ITEMS and i.call_id.startswith(ROUTED))]
        head = [i for i in items if i.type == "message" and i.role in ("system", "developer")]
        body = [i for i in items if i not in head]
        ids = [i.id for i in body]
        start = ids.index(self._window_from) if self._window_from in ids else 0
        limit = get_settings().context_max_items
        if len(body) - start > limit:
            start = len(body) - limit // 2
            while start < len(body) - 1 and not (body[start].type == "message" and body[start].role == "user"):
                start += 1
            self._window_from = body[start].id
        return llm.ChatContext(head + body[start:])

    def prefill_soon(self, partial_user: str = "") -> None:
        """Lets a local LLM evaluate the next prompt's start while the user is still speaking (or about to)."""
        model = self.session.llm
        if not isinstance(model, LlamaLLM):
            return
        self._prefill_next = partial_user
        if self._prefill_task is None or self._prefill_task.done():
            self._prefill_task = asyncio.create_task(self._prefill(model))

    async def _prefill(self, model: LlamaLLM) -> None:
        while self._prefill_next is not None:
            asked = time.monotonic()
            # A preflight transcript arrives as an interim one and starts a reply at once (`llm_node`): that reply
            # goes first. A prefill step already running held the LLM up to ~0.2 s, and one beside a fast-path answer
            # slowed its voice and its playback on both cores.
            await asyncio.sleep(PREFILL_AFTER_S)
            partial, self._prefill_next = self._prefill_next or "", None
            if partial and self._reply_began >= asked:
                continue  # a reply began on these words (or later ones): nothing to read ahead
            upcoming = self.chat_ctx.copy()
            upcoming.add_message(role="user", content=partial)
            try:
                await asyncio.to_thread(model.prefill, self.llm_view(upcoming), list(self.tools))
            except Exception:  # an optimisation only: the request itself evaluates whatever is missing
                logger.exception("prefill failed")


class Assistant(PersonaAgent):
    """The default persona."""


def transfer_tool(target: str) -> llm.FunctionTool:
    async def transfer(context: RunContext, reason: str) -> tuple[Agent, str]:
        history = context.session.current_agent.chat_ctx.copy(exclude_instructions=True)
        return PersonaAgent(personas.get(target), chat_ctx=history), f"Transferring you to the {target} now."

    description = f"Hand the caller over to the {target} when their question is for the {target}."
    return function_tool(transfer, name="transfer", description=description)


def prefill_while_listening(session: AgentSession) -> None:
    """A local LLM reads the conversation ahead of each request: after each answer, and as the user speaks."""

    def agent() -> PersonaAgent | None:
        try:
            current = session.current_agent
        except RuntimeError:  # not started yet, or closing
            return None
        return current if isinstance(current, PersonaAgent) else None

    @session.on("user_input_transcribed")
    def _on_words(ev: UserInputTranscribedEvent) -> None:
        if not ev.is_final and (current := agent()) is not None:
            current.prefill_soon(ev.transcript)

    @session.on("conversation_item_added")
    def _on_item(ev: ConversationItemAddedEvent) -> None:
        if ev.item.type == "message" and ev.item.role == "assistant" and (current := agent()) is not None:
            current.prefill_soon()


def prewarm(proc: JobProcess) -> None:
    """Every model is loaded once per worker (jobs run as threads and share them)."""
    proc.userdata["shared"] = pipeline.load(get_settings(), warm_agent=Assistant())


class Server(AgentServer):
    """livekit-agents' AgentServer, telling livekit-server that a job has ended before its agent leaves the room.

    livekit-agents 1.8.9 reports a job's end (UpdateJobStatus JS_SUCCESS) only once the job's thread has finished,
    after its agent has left the room. livekit-server, seeing the agent of a running job leave, records the job as
    JS_FAILED "agent worker left the room" (livekit/livekit#4447) and then drops the late success as an update for an
    unknown job: every call looked failed. The job's session-end hook runs before the room is left, so the end is
    reported from there (and the late, duplicate report is not sent).
    """

    def __init__(self, **options) -> None:
        super().__init__(**options)
        self._ended: set[str] = set()  # jobs whose end was reported

    async def run(self, *, devmode: bool = False, unregistered: bool = False) -> None:
        hook = self._session_end_fnc  # on_session_end given to rtc_session, if any

        async def session_end(ctx: JobContext) -> None:
            try:
                if hook is not None:
                    await hook(ctx)
            finally:
                if not ctx.is_fake_job():
                    try:
                        done = asyncio.run_coroutine_threadsafe(self._report_end(ctx.job.id), self._loop)
                        await asyncio.wait_for(asyncio.wrap_future(done), 2.0)
                    except Exception:  # the worker is closing: livekit-agents reports the end itself
                        logger.warning("could not report the end of job %s", ctx.job.id, exc_info=True)

        self._session_end_fnc = session_end
        await super().run(devmode=devmode, unregistered=unregistered)

    async def _report_end(self, job_id: str) -> None:  # on the worker's loop; the job's thread waits for it
        from livekit.protocol import agent as lk_agent

        self._ended.add(job_id)
        status = lk_agent.UpdateJobStatus(job_id=job_id, status=lk_agent.JobStatus.JS_SUCCESS)
        await self._queue_msg(lk_agent.WorkerMessage(update_job=status))
        for _ in range(100):  # until the connection's sender has taken it (sent before the room is left)
            if self._msg_chan.empty():
                break
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.02)

    async def _update_job_status(self, proc) -> None:
        from livekit.agents.ipc.job_executor import JobStatus

        job = proc.running_job
        if job is not None and job.job.id in self._ended:
            if proc.status != JobStatus.RUNNING:  # the thread has ended: nothing more is said of this job
                self._ended.discard(job.job.id)
            return
        await super()._update_job_status(proc)


settings = get_settings()
server = Server(
    setup_fnc=prewarm,
    job_executor_type=JobExecutorType.THREAD,
    num_idle_processes=1,
    initialize_process_timeout=180,
    drain_timeout=30,  # on SIGTERM, let calls in progress finish for up to 30 s
    load_fnc=lambda: capacity.load(),  # reported to the server, which offers calls by it (pipeline.Capacity)
    load_threshold=math.inf,  # capacity is checked per request instead (pipeline.Capacity)
    host=settings.agent_http_host,
    port=settings.agent_http_port,
    prometheus_port=settings.agent_metrics_port or None,
    api_key=settings.livekit_api_key,
    api_secret=settings.livekit_api_secret,
    ws_url=settings.livekit_url,
)


capacity = pipeline.Capacity(server, settings.max_sessions, settings.livekit_target_load)


@server.rtc_session(agent_name=settings.agent_name, on_request=capacity.on_request)
async def entrypoint(ctx: JobContext) -> None:
    capacity.started(ctx.job.id)
    if pipeline.dispatch_options(ctx.job.metadata).get("mode") == "echo":
        await echo.run(ctx)
        return
    shared: pipeline.Shared = ctx.proc.userdata["shared"]
    if ctx.is_fake_job():
        # `python -m agent.main console`: the terminal is the microphone and speaker; there is no room to join.
        caller_identity, call = CONSOLE_IDENTITY, None
    else:
        await ctx.connect()
        if pipeline.dispatch_options(ctx.room.metadata).get("agent") == "busy":  # a worker refused it before
            await pipeline.mark_room(ctx.room.name, "", settings)
        try:
            caller = await asyncio.wait_for(ctx.wait_for_participant(), NOBODY_CAME_S)
        except TimeoutError:
            # The caller left (or their call was refused) before the agent came: free the slot, leave the room.
            logger.warning("nobody joined room %s within %.0f s; leaving it", ctx.room.name, NOBODY_CAME_S)
            capacity.finished(ctx.job.id)
            ctx.shutdown(reason="nobody came")
            return
        if group.wanted(settings, pipeline.dispatch_options(ctx.job.metadata), ctx.room):
            # Several people: one listener per person and an answer policy (agent/group.py).
            await group.run(ctx, shared, settings, PersonaAgent, fast_path_prefix=ROUTED)
            return
        caller_identity = caller.identity
        call = phone.Call.of(caller) if phone.is_phone(caller) else None
    identity = call.memory_key if call else phone.data_key(caller_identity)
    session = AgentSession(
        userdata=skills.CallContext(identity=identity, notes=shared.notes, memory=shared.memory, call=call),
        vad=shared.vad,  # 1. voice activity: when the user speaks
        stt=pipeline.build_stt(settings, shared.vad),  # 2. speech to text, streaming
        llm=pipeline.build_llm(settings),  # 3. the language model, with the agent's tools
        tts=pipeline.build_tts(settings),  # 4. text to speech, sentence by sentence
        tts_text_transforms=TTS_TEXT_TRANSFORMS,  # plain text reaches it as the LLM writes it
        turn_handling=pipeline.turn_handling(settings, shared),
        # A call that has ended needs no last transcript: livekit waits 2 s for one by default (nobody is there).
        session_close_transcript_timeout=0.5,
        # A phone line has no echo of the agent to wait out, so the caller can be heard from the first word.
        **({"aec_warmup_duration": None} if call else {}),
    )
    pipeline.log_turn_metrics(session)
    waterfall.attach(session, ctx.room)
    metrics.attach(session, fast_path_prefix=ROUTED)
    for role, provider in (("stt", session.stt), ("llm", session.llm), ("tts", session.tts)):
        metrics.watch_fallbacks(role, provider)
    prefill_while_listening(session)
    memory.record(session, shared.memory, identity)
    earlier = memory.recap(shared.memory, identity, settings.memory_turns)
    if call:
        # A message after the instructions, not in them: the instructions + tools prefix stays the same for every
        # call, so the local LLM finds it cached.
        earlier.add_message(role="system", content=call.context())
    # Talk with the participant whose identity the notes and memories are kept under.
    # 16 kHz is what the VAD and Whisper take (WebRTC resamples, in Rust); 20 ms frames reach the VAD 15 ms sooner on
    # average than livekit's 50 ms default.
    linked = RoomOptions(
        participant_identity=caller_identity, audio_input=AudioInputOptions(sample_rate=16000, frame_size_ms=20)
    )
    persona = pipeline.dispatch_options(ctx.job.metadata).get("persona", settings.persona)
    try:
        agent = PersonaAgent(personas.get(str(persona)), chat_ctx=earlier)
    except personas.UnknownPersona as exc:
        logger.warning("%s; using the default persona", exc)
        agent = PersonaAgent(chat_ctx=earlier)

    leaving: set[asyncio.Future] = set()

    @session.on("close")
    def _end_job(ev: CloseEvent) -> None:
        # The person left or the call ended: free this worker's slot now rather than when the room times out.
        capacity.finished(ctx.job.id)
        if call:

            async def hang_up() -> None:  # nothing of a phone call outlives it
                await ctx.delete_room()

            ctx.add_shutdown_callback(hang_up)
        if ev.reason not in (CloseReason.USER_INITIATED, CloseReason.TASK_COMPLETED) or ctx.is_fake_job():
            # The person left (they may come back after a network blip), or the session failed: leave at once, and
            # the watcher may send an agent again to whoever is there.
            ctx.shutdown(reason="session closed")
            return

        async def leave() -> None:
            # The agent ended the call (goodbye): said before it leaves the room (livekit runs shutdown callbacks only
            # after), so the watcher (stack/redispatch.py) does not send an agent back to the people still there.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(pipeline.mark_room(ctx.room.name, pipeline.ENDED, settings), 2.0)
            ctx.shutdown(reason="session closed")

        leaving.add(task := asyncio.ensure_future(leave()))
        task.add_done_callback(leaving.discard)

    await session.start(agent=agent, room=ctx.room, room_options=linked)
    if call:
        phone.listen_to_keypad(session, ctx.room, call, settings)


if __name__ == "__main__":
    tracing.setup({"voice_agent.agent_name": settings.agent_name})  # only when OTEL_EXPORTER_OTLP_ENDPOINT is set
    command = next((arg for arg in sys.argv[1:] if not arg.startswith("-")), "")
    # `console` talks in the terminal and `download-files` only fetches: neither needs a reachable livekit-server.
    pipeline.preflight(settings, check_server=command not in ("console", "download-files"))
    # Load and warm the models before registering, so no call ever waits for them.
    pipeline.load(settings, warm_agent=Assistant())
    try:
        cli.run_app(server)
        code = 0
    except SystemExit as done:  # the CLI ends with sys.exit
        code = done.code
    if server._connection_failed:  # livekit-agents gave up reconnecting, then drained: not a clean stop
        print(f"agent: lost livekit-server at {settings.livekit_url} and could not reconnect", file=sys.stderr)
        code = code or 1
    if isinstance(code, str):
        print(code, file=sys.stderr)
        code = 1
    # The worker has drained and closed. Finalising the interpreter (the native libraries' teardown) took another
    # second with nothing left to do: run the exit handlers (logs, trace export) and go.
    import atexit
    import os

    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)
