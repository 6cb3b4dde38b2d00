"""What is said of the reply: plain text at once; markup, tool syntax and markdown never.

`without_markup` runs on the LLM's text itself (so the transcript and the chat history are clean too): it drops tags
(`<get_time>...`), braces (`{{get_time}}`, JSON), backticks and identifiers (`convert_units`), which a small model
sometimes writes instead of calling a tool, or around a tool's name; the local LLM turns tool-named tags into the call
first (agent/providers/llama_llm.py).

livekit's own `filter_markdown` holds each piece of text until the next separator arrives, so every word, and the
punctuation that ends the first clause, reached the TTS one LLM token (60-90 ms here) after the LLM wrote it. A
spoken reply rarely has any markdown, so `speakable` passes plain text through as it comes, and hands the rest of
the reply to livekit's filter from the first character that could open markdown on.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterable, AsyncIterator

from livekit.agents import llm
from livekit.agents.voice.transcription.filters import filter_markdown

from agent.skills import calculator

CLOSERS = {"<": ">", "{": "}"}
IDENTIFIER = re.compile(r"\w*_\w*")  # get_time, convert_units: names, not words
_OPERAND = r"\d[\d.,]*\)?\s*[*×÷=+/^-]\s*\(?"
TRAILING_WORD = re.compile(rf"(?:{_OPERAND})*(?:[\w.,]*\w|\d+\.|{_OPERAND})$")  # "11." may go on: "11.666666"
TAG_MAX = 64  # characters a tag may run to its ">"
HELD_MAX = 2000  # characters of an unclosed tag or brace held before they are dropped


class Markup:
    """Drops markup from text that arrives piece by piece; text outside it passes at once."""

    def __init__(self) -> None:
        self._held = ""  # from an opening < or { on, until it closes

    def feed(self, text: str) -> str:
        out, text = [], self._held + text
        self._held = ""
        i = 0
        while i < len(text):
            ch = text[i]
            if ch == "<" and i + 1 == len(text):
                self._held = "<"  # a tag or "less than": the next character says
                break
            if ch == "<" and not re.match(r"[A-Za-z/|!?]", text[i + 1]):
                out.append(ch)
            elif ch in CLOSERS:
                end = _closing(text, i)
                if end is None and ch == "<" and len(text) - i > TAG_MAX:
                    out.append(text[i + 1 : i + TAG_MAX])  # no tag closes this far on: it was text ("a <b and c")
                    i += TAG_MAX
                    continue
                if end is None:
                    self._held = text[i:] if len(text) - i < HELD_MAX else ""
                    break
                i = end
            elif ch not in "`}":
                out.append(ch)
            i += 1
        said = "".join(out)
        if not self._held and (word := TRAILING_WORD.search(said)):
            # A word may go on as an identifier (get_ + time), a number as a long decimal or an arithmetic expression.
            said, self._held = said[: word.start()], word.group()
        return spoken(said)

    def flush(self) -> str:
        held, self._held = self._held, ""
        return spoken(held) if held == "<" or TRAILING_WORD.fullmatch(held) else ""


# Arithmetic as a person says it: "3 * 4 = 12" was read "3 4 12", "11.666666666666666" digit by digit.
SAID_AS = [
    (re.compile(r"(?<=[\d)])\s*[*×]\s*(?=[\d(])"), " times "),
    (re.compile(r"(?<=[\d)])\s*÷\s*(?=[\d(])|(?<=[\d)])\s+/\s+(?=[\d(])"), " divided by "),
    (re.compile(r"(?<=[\d)])\s*\+\s*(?=[\d(])"), " plus "),
    (re.compile(r"(?<=[\d)])\s+-\s+(?=[\d(])"), " minus "),
    (re.compile(r"(?<=\d)\s*\^\s*(?=\d)"), " to the power of "),
    (re.compile(r"(?<=[\d)])\s*=\s*"), " equals "),
    (re.compile(r"\*+|#+"), ""),  # emphasis and headings: the TTS's markdown filter drops them, the transcript too
]
LONG_DECIMAL = re.compile(r"(?<![\d.])\d+\.\d{5,}(?![\d.])")


def spoken(text: str) -> str:
    text = IDENTIFIER.sub("", text)
    if not re.search(r"[\d*#]", text):
        return text
    for pattern, words in SAID_AS:
        text = pattern.sub(words, text)
    return LONG_DECIMAL.sub(lambda m: calculator.spoken_number(float(m.group())), text)


def _closing(text: str, start: int) -> int | None:
    """Index of the character that closes the tag or brace opened at `start` (braces nest)."""
    opener, closer, depth = text[start], CLOSERS[text[start]], 0
    for j in range(start, len(text)):
        depth += (text[j] == opener) - (text[j] == closer)
        if depth == 0:
            return j
    return None


async def without_markup(chunks: AsyncIterable[str | llm.ChatChunk]) -> AsyncIterator[str | llm.ChatChunk]:
    """An llm_node's output with markup dropped from its text; tool calls and usage pass as they are."""
    markup = Markup()
    async for chunk in chunks:
        if isinstance(chunk, str):
            if text := markup.feed(chunk):
                yield text
        elif chunk.delta is not None and chunk.delta.content:
            text = markup.feed(chunk.delta.content)
            if text or chunk.delta.tool_calls:
                yield chunk.model_copy(update={"delta": chunk.delta.model_copy(update={"content": text or None})})
            elif chunk.usage is not None:
                yield chunk.model_copy(update={"delta": None})
        else:
            yield chunk
    if rest := markup.flush():
        yield rest


# Characters that can open inline markdown (emphasis, code, strikethrough, links, images, headers, quotes) or a
# new line, where a list marker may follow.
MARKUP = re.compile(r"[*_`~\[\]#>\n]")
LINE_MARKER = re.compile(r"\s*[-+]")  # a list item, when the reply opens with one


async def speakable(text: AsyncIterable[str]) -> AsyncIterator[str]:
    pieces = text.__aiter__()
    held = ""
    spoke = False  # some non-blank text went out: the reply no longer starts a line
    async for piece in pieces:
        held += piece
        if MARKUP.search(held) or (not spoke and LINE_MARKER.match(held)):
            break
        if not held.strip():
            continue  # blanks at the start: see what they introduce
        spoke = True
        yield held
        held = ""
    else:
        if held:
            yield held
        return

    async def rest() -> AsyncIterator[str]:
        yield held
        async for piece in pieces:
            yield piece

    async for piece in filter_markdown(rest()):
        yield piece


TTS_TEXT_TRANSFORMS = [speakable, "filter_emoji"]
