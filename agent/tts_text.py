"""What the TTS is given of the reply: plain text at once, markdown stripped.

livekit's own `filter_markdown` holds each piece of text until the next separator arrives, so every word, and the
punctuation that ends the first clause, reached the TTS one LLM token (60-90 ms here) after the LLM wrote it. A
spoken reply rarely has any markdown, so `speakable` passes plain text through as it comes, and hands the rest of
the reply to livekit's filter from the first character that could open markdown on.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterable, AsyncIterator

from livekit.agents.voice.transcription.filters import filter_markdown

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
