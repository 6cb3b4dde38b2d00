"""Small local models write tool calls as text; the parser must turn them into calls and speak the rest."""

from __future__ import annotations

import pytest

from agent.providers.llama_llm import ToolCallParser

TOOLS = {"get_time"}


def run(chunks: list[str]) -> tuple[str, list[tuple[str, dict]]]:
    parser = ToolCallParser(TOOLS)
    spoken = "".join(parser.feed(c) for c in chunks)
    rest, calls = parser.finish()
    return spoken + rest, [(c.name, c.arguments) for c in calls]


def split(text: str, size: int = 3) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


@pytest.mark.parametrize(
    "text",
    [
        '<tool_call>\n{"name": "get_time", "arguments": {"location": "Tokyo"}}\n</tool_call>',
        '```json\n{"name": "get_time", "arguments": {"location": "Tokyo"}}\n```',
        '{"name": "get_time", "arguments": {"location": "Tokyo"}}',
        '{"name": "get_time", "arguments": "{\\"location\\": \\"Tokyo\\"}"}',
        '{"name": "get_time", "parameters": {"location": "Tokyo"}}',
        '{ "name": "get_time", "arguments": { "location": "Tokyo" } }',
        '\n{\n  "name": "get_time",\n  "arguments": {"location": "Tokyo"}\n}',
    ],
)
def test_tool_call_written_as_text_becomes_a_call(text):
    for chunks in ([text], split(text), split(text, 1)):
        assert run(chunks) == ("", [("get_time", {"location": "Tokyo"})])


@pytest.mark.parametrize(
    "text",
    ["The day today is <get_time>get_time</get_time>.", "The day today is {{get_time}}.", "It is {{ get_time }}"],
)
def test_a_tool_named_in_a_tag_or_braces_is_called_not_said(text):
    """What the 1.5B wrote, three times in three calls, for "What is the day today?"."""
    for chunks in ([text], split(text), split(text, 1)):
        spoken, calls = run(chunks)
        assert calls == [("get_time", {})] and "get_time" not in spoken
        assert spoken.strip() in ("The day today is", "It is")


def test_plain_answer_streams_unchanged_and_early():
    parser = ToolCallParser(TOOLS)
    assert parser.feed("Cats sleep ") == "Cats sleep "
    assert parser.feed("a lot.") == "a lot."
    assert parser.finish() == ("", [])


def test_text_before_a_call_is_spoken_and_the_call_kept():
    spoken, calls = run(
        split('Let me check. <tool_call>{"name": "get_time", "arguments": {"location": "Oslo"}}</tool_call>')
    )
    assert spoken.strip() == "Let me check."
    assert calls == [("get_time", {"location": "Oslo"})]


def test_unknown_tool_or_code_is_spoken_without_markup():
    spoken, calls = run(split('```python\nprint("hi")\n```'))
    assert calls == [] and "```" not in spoken and 'print("hi")' in spoken
    spoken, calls = run(['{"name": "launch_rocket", "arguments": {}}'])
    assert calls == []


def test_a_held_back_marker_prefix_is_released_when_it_is_not_a_marker():
    assert run(["Use the < key", " to go back."]) == ("Use the < key to go back.", [])


def test_no_tools_offered_means_everything_is_speech():
    parser = ToolCallParser(set())
    assert parser.feed('{"name": "x"}') == '{"name": "x"}'
