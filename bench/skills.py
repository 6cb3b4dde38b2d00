"""Skill routing benchmark: which requests reach the right tool, by the fast path or the local LLM, and how fast.

Run: `uv run python -m bench.skills` (loads the packaged 1.5B model; about a minute on 2 cores).
"""

from __future__ import annotations

import asyncio
import statistics
import time

from livekit.agents import llm

from agent.main import Assistant
from agent.models import packaged_gguf
from agent.providers.llama_llm import LlamaLLM
from agent.skills.router import route

# (request, the tool it needs or None for a plain answer)
REQUESTS = [
    ("What time is it in Tokyo?", "get_time"),
    ("What's the date in Sydney right now?", "get_time"),
    ("What is 17 times 23?", "calculate"),
    ("How much is 15 percent of 240?", "calculate"),
    ("What's the square root of 1764?", "calculate"),
    ("Convert 5 miles to kilometers.", "convert_units"),
    ("How many pounds is 3 kilograms?", "convert_units"),
    ("What is 100 fahrenheit in celsius?", "convert_units"),
    ("Remember that my parking spot is B12.", "save_note"),
    ("Please note that the meeting moved to Thursday.", "save_note"),
    ("What did I ask you to remember?", "recall_notes"),
    ("Where did I park? Check my notes.", "recall_notes"),
    ("Forget everything I told you to remember.", "forget_notes"),
    ("That's all, thanks. Goodbye!", "end_call"),
    ("Tell me a fun fact about octopuses.", None),
    ("What is the capital of Canada?", None),
]


async def llm_choice(model: LlamaLLM, agent: Assistant, request: str) -> str | None:
    ctx = llm.ChatContext()
    ctx.add_message(role="system", content=agent.instructions)
    ctx.add_message(role="user", content=request)
    calls: list[llm.FunctionToolCall] = []
    async with model.chat(chat_ctx=ctx, tools=list(agent.tools)) as stream:
        async for chunk in stream:
            if chunk.delta:
                calls += chunk.delta.tool_calls
    return calls[0].name if calls else None


async def main() -> None:
    agent = Assistant()
    enabled = {getattr(tool, "id", "") for tool in agent.tools}
    model = LlamaLLM(model_path=str(packaged_gguf()))
    warm = llm.ChatContext()
    warm.add_message(role="system", content=agent.instructions)
    warm.add_message(role="user", content="Hello")
    model.warm(warm, list(agent.tools))

    rows, llm_only_ok, combined_ok = [], 0, 0
    fast_times, llm_times = [], []
    for request, wanted in REQUESTS:
        started = time.perf_counter()
        routed = route(request, enabled)
        fast_s = time.perf_counter() - started
        started = time.perf_counter()
        by_llm = await llm_choice(model, agent, request)
        llm_s = time.perf_counter() - started
        llm_times.append(llm_s)
        combined = routed.tool if routed else by_llm
        if routed:
            fast_times.append(fast_s)
        llm_only_ok += by_llm == wanted
        combined_ok += combined == wanted
        path = "fast path" if routed else "LLM"
        rows.append(
            f"{'ok ' if combined == wanted else 'BAD'} {path:9} {llm_s:6.2f} s (LLM)  {request!r} -> {combined}"
        )
    print("\n".join(rows))
    n = len(REQUESTS)
    print(
        f"\nLLM alone (Qwen2.5-Coder-1.5B, {len(enabled)} tools): {llm_only_ok}/{n} right tool or plain answer,"
        f" median decision {statistics.median(llm_times):.2f} s"
    )
    print(
        f"fast path first, then LLM: {combined_ok}/{n}; the fast path served {len(fast_times)}/{n}"
        f" requests in median {statistics.median(fast_times) * 1000:.2f} ms"
    )


if __name__ == "__main__":
    asyncio.run(main())
