"""A scripted `llm.LLM` for text-mode evals: replies come from a function of the chat so far."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from livekit.agents import DEFAULT_API_CONNECT_OPTIONS, APIConnectOptions, llm, utils
from livekit.agents.types import NOT_GIVEN, NotGivenOr

# A reply is either text, or a tool call as (name, arguments).
Reply = str | tuple[str, dict[str, Any]]


class ScriptedLLM(llm.LLM):
    def __init__(self, script: Callable[[llm.ChatContext], Reply]) -> None:
        super().__init__()
        self.script = script
        self.calls: list[llm.ChatContext] = []

    def chat(
        self,
        *,
        chat_ctx: llm.ChatContext,
        tools: list[llm.Tool] | None = None,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
        parallel_tool_calls: NotGivenOr[bool] = NOT_GIVEN,
        tool_choice: NotGivenOr[llm.ToolChoice] = NOT_GIVEN,
        extra_kwargs: NotGivenOr[dict[str, Any]] = NOT_GIVEN,
    ) -> llm.LLMStream:
        self.calls.append(chat_ctx.copy())
        return _ScriptedStream(self, chat_ctx=chat_ctx, tools=tools or [], conn_options=conn_options)


class _ScriptedStream(llm.LLMStream):
    async def _run(self) -> None:
        reply = self._llm.script(self._chat_ctx)
        if isinstance(reply, tuple):
            name, args = reply
            call = llm.FunctionToolCall(name=name, arguments=json.dumps(args), call_id=utils.shortuuid("call_"))
            delta = llm.ChoiceDelta(role="assistant", tool_calls=[call])
            self._event_ch.send_nowait(llm.ChatChunk(id="scripted", delta=delta))
            return
        for word in reply.split(" "):
            self._event_ch.send_nowait(
                llm.ChatChunk(id="scripted", delta=llm.ChoiceDelta(role="assistant", content=word + " "))
            )


def last_item(chat_ctx: llm.ChatContext) -> llm.ChatItem:
    return chat_ctx.items[-1]
