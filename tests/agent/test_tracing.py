"""OpenTelemetry traces (agent/tracing.py): a text-mode turn with a tool call reaches a real OTLP/HTTP receiver."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from livekit.agents import AgentSession, llm, telemetry

from agent import tracing
from agent.main import Assistant
from agent.settings import get_settings
from agent.skills import CallContext
from tests.support.otlp_receiver import OTLPReceiver, attributes
from tests.support.scripted_llm import ScriptedLLM

SECRET = "sk-otel-test-3f9a1c7e"
OTEL_VARS = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    "OTEL_SERVICE_NAME",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch) -> Iterator[None]:
    for var in OTEL_VARS:
        monkeypatch.delenv(var, raising=False)
    before = telemetry.tracer._tracer_provider
    yield
    tracing.shutdown()
    assert telemetry.tracer._tracer_provider is before  # nothing leaks into the other tests


@pytest.fixture
def receiver() -> Iterator[OTLPReceiver]:
    server = OTLPReceiver().start()
    yield server
    server.stop()


def test_without_an_endpoint_nothing_is_set_up():
    before = telemetry.tracer._tracer_provider
    assert tracing.setup() is False
    assert telemetry.tracer._tracer_provider is before
    assert tracing.flush() is True


def test_describe_keeps_credentials_out_of_the_log():
    assert tracing.describe("https://user:pw@otel.example.com:4318/v1/traces?api_key=x") == (
        "https://otel.example.com:4318"
    )


async def test_a_turn_with_a_tool_call_is_traced(receiver, monkeypatch, caplog):
    monkeypatch.setattr(get_settings(), "skill_fast_path", False)  # the LLM calls the tool
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", f"authorization=Bearer%20{SECRET}")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "voice-agent-test")
    caplog.set_level(logging.DEBUG)
    assert tracing.setup() is True
    assert tracing.setup() is True  # idempotent

    def script(ctx: llm.ChatContext):
        last = ctx.items[-1]
        if last.type == "function_call_output":
            return f"Done: {last.output}"
        return ("calculate", {"expression": "12.5% of 80"})

    scripted = ScriptedLLM(script)
    session = AgentSession(llm=scripted, userdata=CallContext())
    async with scripted, session:
        await session.start(Assistant())
        result = await session.run(user_input="What is 12.5 percent of 80?")
        result.expect.next_event().is_function_call(name="calculate")
    assert tracing.flush() is True

    spans = receiver.wait_for("function_tool")
    names = {span.name for _, span in spans}
    assert {"agent_turn", "llm_node", "function_tool"} <= names, names
    assert {resource.get("service.name") for resource, _ in spans} == {"voice-agent-test"}

    tool = next(span for _, span in spans if span.name == "function_tool")
    tool_attributes = attributes(tool)
    assert tool_attributes.get("lk.function_tool.name") == "calculate", tool_attributes
    turn = next(span for _, span in spans if span.name == "agent_turn")
    assert tool.trace_id == turn.trace_id  # one trace for the turn

    # The headers reach the collector, and nowhere else: not in a span, not in the log.
    assert all(headers.get("authorization") == f"Bearer {SECRET}" for headers in receiver.headers)
    for _, span in spans:
        assert SECRET not in repr(attributes(span)), span.name
    assert SECRET not in caplog.text
    assert "OpenTelemetry traces on: service voice-agent-test" in caplog.text
