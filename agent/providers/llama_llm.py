"""Local LLM with llama.cpp (llama-cpp-python), as a livekit-agents `llm.LLM`.

The prompt is rendered with the model's own chat template (tools included), so the system prompt and
tool schema form a constant prefix that llama.cpp keeps evaluated between turns and sessions.
Small models write tool calls as text (`<tool_call>` tags, fenced or bare JSON); `ToolCallParser`
turns them into real function calls and streams everything else as speech.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, TypeVar

from livekit.agents import DEFAULT_API_CONNECT_OPTIONS, APIConnectionError, APIConnectOptions, llm, utils
from livekit.agents.types import NOT_GIVEN, NotGivenOr

from agent import cpu

logger = logging.getLogger("agent.llm")

TOOL_MARKERS = ("<tool_call>", "<tools>", "```", '{"name"', '{"function"', '{"type": "function"')
STOP = ["<|im_end|>", "<|endoftext|>", "</tool_call>\n\n"]
PREFILL_STEP = 8  # tokens per step (0.15-0.6 s on 2 busy cores; a step in flight is aborted when urgent work begins)
SHIFT_MATCH = 16  # tokens that must line up before the cache is shifted onto a new prompt
ANSWER_NOW = "Answer the person now in one or two short sentences, using the tool result above."

T = TypeVar("T")
_on_engine_thread = threading.local()


def _engine_thread() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="llama", initializer=_mark_engine_thread)


def _mark_engine_thread() -> None:
    _on_engine_thread.value = True


@dataclass
class Engine:
    """One llama.cpp model and context per process, shared by every session."""

    llama: Any
    template: Any
    lock: threading.Lock = field(default_factory=threading.Lock)  # one generation at a time
    warmed: set[str] = field(default_factory=set)
    waiting: int = 0  # generations waiting for the lock: a prefill gives way to them
    chatml: tuple[int, list[int]] | None = None  # "<|im_start|>" and "user" as tokens, for a ChatML model
    thread: ThreadPoolExecutor = field(default_factory=_engine_thread)
    prefilling: bool = False  # a prefill step is being evaluated
    abort_flag: Any = None  # the byte llama.cpp's abort callback reads (`abort_prefill_steps`)
    abort_callback: Any = None
    _abort_lock: threading.Lock = field(default_factory=threading.Lock)

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Runs `fn` on the engine's own thread. Every llama.cpp call must: each thread that calls into llama.cpp gets
        an OpenMP team of its own, and once a process has more OpenMP threads than cores, libgomp stops spinning at
        barriers and sleeps at each of the hundreds per token. Here that took a token from 39 to 65 ms (80-90 ms in the
        agent, where prefills ran on the executor's threads and each reply on a new thread)."""
        if getattr(_on_engine_thread, "value", False):
            done: Future[T] = Future()
            done.set_result(fn(*args))
            return done
        return self.thread.submit(fn, *args)

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        return self.submit(fn, *args).result()

    def abort_prefill_steps(self) -> None:
        """Lets `stop_prefill` abort a prefill step in flight. llama.cpp asks an abort callback before each operation
        of the graph (hundreds per token) on its compute thread; a Python callback would take the GIL each time, so
        the callback is libc's `strlen` on a two-byte buffer: non-zero, that is true, once the first byte is set."""
        import llama_cpp

        try:
            strlen = ctypes.cast(ctypes.CDLL(None).strlen, ctypes.c_void_p).value
        except (OSError, AttributeError):
            return  # prefill steps then run to their end
        self.abort_flag = ctypes.create_string_buffer(2)
        self.abort_callback = llama_cpp.ggml_abort_callback(strlen)
        data = ctypes.cast(self.abort_flag, ctypes.c_void_p)
        llama_cpp.llama_set_abort_callback(self.llama._ctx.ctx, self.abort_callback, data)

    def stop_prefill(self) -> None:
        """Aborts the prefill step being evaluated, if any, within a few ms. A step of 8 tokens takes 0.15-0.6 s
        here, and one in flight when the person stopped speaking slowed the final transcript's decode by as much.
        llama.cpp removes the aborted step's tokens from its cache; they are evaluated again later."""
        with self._abort_lock:
            if self.prefilling and self.abort_flag is not None:
                self.abort_flag[0] = b"\x01"

    def _step(self, tokens: list[int]) -> bool:
        """Evaluates one prefill step; False when it was aborted (`stop_prefill`)."""
        with self._abort_lock:
            self.prefilling = True
        try:
            if self.waiting or cpu.busy():
                return False
            self.llama.eval(tokens)
            return True
        except RuntimeError:
            if self.abort_flag is not None and self.abort_flag[0] != b"\x00":
                return False
            raise
        finally:
            with self._abort_lock:
                self.prefilling = False
                if self.abort_flag is not None:
                    self.abort_flag[0] = b"\x00"

    def prefill(self, text: str) -> int:
        """Evaluates `text` as the start of the next prompt, so that prompt finds it cached.

        Runs only while no generation needs the model and no urgent work runs (`agent.cpu`), in small steps that stop
        as soon as either starts, the step in flight included. Returns how many tokens it evaluated.
        """
        if self.waiting or cpu.busy():
            return 0
        return self.call(self._prefill, text)

    def _prefill(self, text: str) -> int:
        if self.waiting or cpu.busy() or not self.lock.acquire(blocking=False):
            return 0
        try:
            llama = self.llama
            tokens = llama.tokenize(text.encode(), add_bos=False, special=True)
            if len(tokens) >= llama.n_ctx():
                return 0
            self.shift_onto(tokens)
            cached = _common_prefix(llama._input_ids.tolist(), tokens)
            llama.n_tokens = min(llama.n_tokens, cached)
            done = 0
            for start in range(cached, len(tokens), PREFILL_STEP):
                step = tokens[start : start + PREFILL_STEP]
                if not self._step(step):
                    break
                done += len(step)
            return done
        finally:
            self.lock.release()

    def shift_onto(self, tokens: list[int]) -> int:
        """When `tokens` leaves out a span of what is cached (the conversation window moved past its oldest items),
        removes that span from the KV cache and shifts what follows into its place, so the rest of the conversation
        is not evaluated again (300-500 tokens, 6-10 s on 2 cores). Call with `lock` held. Returns the tokens
        shifted."""
        import llama_cpp

        llama = self.llama
        cached = llama._input_ids.tolist()
        start = _common_prefix(cached, tokens)
        probe = tokens[start : start + SHIFT_MATCH]
        if len(probe) < SHIFT_MATCH or start >= len(cached) or not self._in_user_message(cached, start):
            return 0
        memory = llama_cpp.llama_get_memory(llama._ctx.ctx)
        if not memory or not llama_cpp.llama_memory_can_shift(memory):
            return 0
        for dropped in range(1, len(cached) - start - SHIFT_MATCH + 1):
            if cached[start + dropped : start + dropped + SHIFT_MATCH] == probe:
                break
        else:
            return 0
        kept = _common_prefix(cached[start + dropped :], tokens[start:])
        end = start + dropped + kept
        llama_cpp.llama_memory_seq_rm(memory, 0, end, -1)
        llama_cpp.llama_memory_seq_rm(memory, 0, start, start + dropped)
        llama_cpp.llama_memory_seq_add(memory, 0, start + dropped, end, -dropped)
        llama.input_ids[start : start + kept] = cached[start + dropped : end]
        llama.n_tokens = start + kept
        llama._requires_eval = True
        return kept

    def _in_user_message(self, tokens: list[int], at: int) -> bool:
        """Whether position `at` lies in a user message (ChatML), so that what a shift drops is conversation. The
        tokens after a dropped span keep what they saw of it; that is how context shifting works, and harmless for old
        exchanges, but not for changed instructions or tools (the model then answered in another style)."""
        if not self.chatml:
            return False
        opener, user = self.chatml
        for i in range(min(at, len(tokens)) - 1, -1, -1):
            if tokens[i] == opener:
                return tokens[i + 1 : i + 1 + len(user)] == user
        return False


@lru_cache(maxsize=2)
def load_llama(model_path: str, n_ctx: int, n_threads: int, n_threads_batch: int | None = None) -> Engine:
    """`n_threads` write the reply token by token, `n_threads_batch` evaluate prompts."""
    try:
        from llama_cpp import Llama
    except ImportError as exc:  # built by scripts/setup with CPU-specific flags
        raise RuntimeError("llama-cpp-python is not installed: run `bash scripts/setup` (see README)") from exc
    thread = _engine_thread()
    llama = thread.submit(
        Llama,
        model_path=model_path,
        n_ctx=n_ctx,
        n_threads=n_threads,
        n_threads_batch=n_threads_batch or n_threads,
        n_batch=512,
        verbose=False,
    ).result()
    engine = Engine(llama=llama, template=_template(llama.metadata["tokenizer.chat_template"]), thread=thread)
    engine.abort_prefill_steps()
    cpu.on_urgent(engine.stop_prefill)
    opener = llama.tokenize(b"<|im_start|>", add_bos=False, special=True)
    if len(opener) == 1 and "<|im_start|>" in llama.metadata["tokenizer.chat_template"]:
        engine.chatml = (opener[0], llama.tokenize(b"user", add_bos=False, special=True))
    return engine


@lru_cache(maxsize=2)
def _template(source: str):
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = lambda message: (_ for _ in ()).throw(ValueError(message))
    env.globals["strftime_now"] = lambda fmt: time.strftime(fmt)
    return env.from_string(source)


def _plain_messages(chat_ctx: llm.ChatContext) -> list[dict[str, Any]]:
    messages, _ = chat_ctx.to_provider_format("openai")
    out = []
    for msg in messages:
        msg = dict(msg)
        if msg.get("role") == "developer":
            msg["role"] = "system"
        content = msg.get("content")
        if isinstance(content, list):
            msg["content"] = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        if msg.get("tool_calls"):
            calls = []
            for call in msg["tool_calls"]:
                fn = dict(call["function"])
                with contextlib.suppress(TypeError, json.JSONDecodeError):
                    fn["arguments"] = json.loads(fn["arguments"] or "{}")
                calls.append({**call, "function": fn})
            msg["tool_calls"] = calls
        out.append(msg)
    return out


@dataclass
class ParsedCall:
    name: str
    arguments: dict[str, Any]


class ToolCallParser:
    """Splits streamed model text into speech and tool calls written as text."""

    def __init__(self, tool_names: set[str]) -> None:
        self._tool_names = tool_names
        # A tool's name in a tag or braces ("<get_time>", "{{get_time}}"): the 1.5B's way of calling it, at times.
        self._markers = TOOL_MARKERS + tuple(f"{o}{n}" for n in sorted(tool_names) for o in ("<", "{{", "{{ "))
        self._pending = ""
        self._tool_text: str | None = None
        self._spoke = False  # some speech went out already

    def feed(self, text: str) -> str:
        """Returns the text that is safe to speak now."""
        if self._tool_text is not None or not self._tool_names:
            if self._tool_text is not None:
                self._tool_text += text
                return ""
            return text
        self._pending += text
        if not self._spoke and not self._pending.strip():
            return ""  # leading whitespace: wait to see what it introduces
        if not self._spoke and self._pending.lstrip().startswith("{"):
            # A reply that opens with a brace is JSON, whatever its spacing ('{ "name"', '{\n  "name"'): never speech.
            self._tool_text, self._pending = self._pending, ""
            return ""
        hits = [i for i in (self._pending.find(m) for m in self._markers) if i >= 0]
        if hits:
            cut = min(hits)
            speak, self._tool_text = self._pending[:cut], self._pending[cut:]
            self._pending = ""
            return speak
        hold = max((k for m in self._markers for k in range(1, len(m)) if self._pending.endswith(m[:k])), default=0)
        speak, self._pending = (
            self._pending[: len(self._pending) - hold],
            self._pending[len(self._pending) - hold :],
        )
        self._spoke = self._spoke or bool(speak.strip())
        return speak

    def finish(self) -> tuple[str, list[ParsedCall]]:
        """Returns the remaining speech and the tool calls found."""
        if self._tool_text is None:
            rest, self._pending = self._pending, ""
            return rest, []
        calls = [c for c in parse_tool_calls(self._tool_text) if c.name in self._tool_names]
        if calls:
            return "", calls
        named = re.match(r"\s*(?:<|\{\{)\s*(\w+)", self._tool_text)
        if named and named.group(1) in self._tool_names:  # "<get_time>get_time</get_time>": the call, as it can
            return "", [ParsedCall(named.group(1), {})]
        # Not a call after all (code or a stray brace): speak it without markup.
        return re.sub(r"```\w*|</?tool_calls?>|</?tools>", "", self._tool_text).strip(), []


def parse_tool_calls(text: str) -> list[ParsedCall]:
    calls = []
    decoder = json.JSONDecoder()
    i = 0
    while (i := text.find("{", i)) >= 0:
        try:
            obj, end = decoder.raw_decode(text, i)
        except json.JSONDecodeError:
            i += 1
            continue
        i = end
        if isinstance(obj, dict) and isinstance(obj.get("function"), dict):
            obj = obj["function"]  # {"type": "function", "function": {"name": ..., "arguments": ...}}
        if isinstance(obj, dict) and isinstance(obj.get("name"), str):
            args = obj.get("arguments", obj.get("parameters", {}))
            if isinstance(args, str):
                try:
                    args = json.loads(args)
                except json.JSONDecodeError:
                    args = {}
            calls.append(ParsedCall(obj["name"], args if isinstance(args, dict) else {}))
    return calls


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


class LlamaLLM(llm.LLM):
    def __init__(
        self,
        *,
        model_path: str,
        n_ctx: int = 4096,
        n_threads: int = 2,
        n_threads_batch: int | None = None,
        temperature: float = 0.2,
        max_tokens: int = 200,
    ) -> None:
        super().__init__()
        self._model_path = model_path
        self._engine = load_llama(model_path, n_ctx, n_threads, n_threads_batch)
        self._temperature = temperature
        self._max_tokens = max_tokens

    @property
    def model(self) -> str:
        return self._model_path.rsplit("/", 1)[-1]

    @property
    def provider(self) -> str:
        return "llama.cpp"

    def render(self, chat_ctx: llm.ChatContext, tools: list[llm.Tool], generation_prompt: bool = True) -> str:
        schemas = llm.ToolContext(tools).parse_function_tools("openai", strict=False) if tools else None
        messages = _plain_messages(chat_ctx)
        if generation_prompt and messages and messages[-1].get("role") == "tool":
            # Small models repeat the same call after its result; a last cue turns them to the answer.
            messages.append({"role": "system", "content": ANSWER_NOW})
        return self._engine.template.render(messages=messages, tools=schemas, add_generation_prompt=generation_prompt)

    def warm(self, chat_ctx: llm.ChatContext, tools: list[llm.Tool]) -> float:
        """Evaluates the prompt prefix (system prompt + tools) so the first turn starts from cache."""
        started = time.perf_counter()
        prompt = self.render(chat_ctx, tools)
        engine = self._engine

        def evaluate() -> None:
            with engine.lock:
                if prompt not in engine.warmed:
                    for _ in engine.llama.create_completion(prompt, max_tokens=1, stream=True):
                        pass
                    engine.warmed.add(prompt)

        engine.call(evaluate)
        return time.perf_counter() - started

    def prefill(self, chat_ctx: llm.ChatContext, tools: list[llm.Tool]) -> int:
        """Evaluates the known start of the next prompt. `chat_ctx` ends with the user's message as heard so far
        (empty before they speak); it counts up to its last complete word. Blocking: call it off the event loop."""
        partial = chat_ctx.items[-1].text_content if chat_ctx.items else ""
        if partial and " " in partial.strip():
            text = self.render(chat_ctx, tools, generation_prompt=False)
            text = text[: text.rfind(partial) + len(partial)]
            text = text[: text.rfind(" ")]
        else:
            text = self.render(llm.ChatContext(chat_ctx.items[:-1]), tools, generation_prompt=False)
        return self._engine.prefill(text)

    def chat(
        self,
        *,
        chat_ctx: llm.ChatContext,
        tools: list[llm.Tool] | None = None,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
        parallel_tool_calls: NotGivenOr[bool] = NOT_GIVEN,
        tool_choice: NotGivenOr[llm.ToolChoice] = NOT_GIVEN,
        extra_kwargs: NotGivenOr[dict[str, Any]] = NOT_GIVEN,
    ) -> LlamaStream:
        offer_tools = tools or []
        if tool_choice == "none":
            offer_tools = []
        return LlamaStream(self, chat_ctx=chat_ctx, tools=offer_tools, conn_options=conn_options)


class LlamaStream(llm.LLMStream):
    def __init__(
        self,
        model: LlamaLLM,
        *,
        chat_ctx: llm.ChatContext,
        tools: list[llm.Tool],
        conn_options: APIConnectOptions,
    ) -> None:
        super().__init__(model, chat_ctx=chat_ctx, tools=tools, conn_options=conn_options)
        self._model = model

    async def _run(self) -> None:
        request_id = utils.shortuuid("llama_")
        prompt = self._model.render(self._chat_ctx, self._tools)
        tool_names = set(llm.ToolContext(self._tools).function_tools)
        parser = ToolCallParser(tool_names)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[str | BaseException | None] = asyncio.Queue()
        stop = threading.Event()
        usage: dict[str, float] = {"prompt": 0, "completion": 0}

        engine = self._model._engine

        def generate() -> None:
            try:
                with cpu.urgent(), engine.lock:
                    usage["queued"] = time.perf_counter() - asked  # behind a prefill step or another reply
                    engine.waiting -= 1
                    if stop.is_set():  # the reply was dropped while it waited for the engine
                        return
                    llama = engine.llama
                    tokens = llama.tokenize(prompt.encode(), add_bos=False, special=True)
                    engine.shift_onto(tokens)
                    usage["prompt"] = len(tokens)
                    usage["cached"] = _common_prefix(llama._input_ids.tolist(), tokens)
                    started, cpu_started = time.perf_counter(), time.thread_time()
                    for part in llama.create_completion(
                        prompt,
                        max_tokens=self._model._max_tokens,
                        temperature=self._model._temperature,
                        stop=STOP,
                        stream=True,
                    ):
                        if stop.is_set():
                            break
                        usage["completion"] += 1
                        if usage["completion"] == 1:
                            usage["ttft"] = time.perf_counter() - started
                        loop.call_soon_threadsafe(queue.put_nowait, part["choices"][0]["text"])
                    usage["seconds"] = time.perf_counter() - started
                    usage["cpu"] = time.thread_time() - cpu_started  # under the wall time when it waited for a core
            except BaseException as exc:  # surfaced to the session as an API error
                loop.call_soon_threadsafe(queue.put_nowait, exc)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, None)

        engine.waiting += 1  # a prefill running on the engine's thread stops now
        engine.stop_prefill()
        asked = time.perf_counter()
        engine.submit(generate)
        try:
            while (item := await queue.get()) is not None:
                if isinstance(item, BaseException):
                    raise APIConnectionError(f"llama.cpp failed: {item}") from item
                if speak := parser.feed(item):
                    self._send_text(request_id, speak)
            logger.info(
                "waited %.2f s for the model; prompt %d tokens (%d cached), first token %.2f s, %d tokens in %.2f s "
                "(on the CPU %.2f s)",
                usage.get("queued", 0.0),
                usage["prompt"],
                usage.get("cached", 0),
                usage.get("ttft", 0.0),
                usage["completion"],
                usage.get("seconds", 0.0),
                usage.get("cpu", 0.0),
            )
            rest, calls = parser.finish()
            if rest:
                self._send_text(request_id, rest)
            if calls:
                self._event_ch.send_nowait(
                    llm.ChatChunk(
                        id=request_id,
                        delta=llm.ChoiceDelta(
                            role="assistant",
                            tool_calls=[
                                llm.FunctionToolCall(
                                    name=c.name,
                                    arguments=json.dumps(c.arguments),
                                    call_id=utils.shortuuid("call_"),
                                )
                                for c in calls
                            ],
                        ),
                    )
                )
            self._event_ch.send_nowait(
                llm.ChatChunk(
                    id=request_id,
                    usage=llm.CompletionUsage(
                        completion_tokens=int(usage["completion"]),
                        prompt_tokens=int(usage["prompt"]),
                        total_tokens=int(usage["prompt"] + usage["completion"]),
                    ),
                )
            )
        finally:
            stop.set()

    def _send_text(self, request_id: str, text: str) -> None:
        self._event_ch.send_nowait(llm.ChatChunk(id=request_id, delta=llm.ChoiceDelta(role="assistant", content=text)))
