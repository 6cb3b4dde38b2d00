"""A sentence tokenizer for speech that lets the first clause go at once.

A reply's first words decide how fast the agent sounds: waiting for a whole first sentence costs the time the LLM
takes to write it (~1 s on a small local model). So the first clause ("Sure, ...", "Octopuses have three hearts,")
goes to the TTS as soon as its punctuation arrives; the rest of the reply is cut into whole sentences, which sound
better, by livekit's own tokenizer.
"""

from __future__ import annotations

import re

from livekit.agents import tokenize
from livekit.agents.tokenize.token_stream import BufferedSentenceStream
from livekit.agents.tokenize.tokenizer import TokenData

CLAUSE_END = re.compile(r"[,;:.!?](?=\s)")
MIN_CLAUSE_WORDS = 3  # a shorter first piece leaves a gap while the LLM writes the next one


class FirstClauseTokenizer(tokenize.SentenceTokenizer):
    def __init__(self) -> None:
        self._sentences = tokenize.blingfire.SentenceTokenizer(retain_format=True)

    def tokenize(self, text: str, *, language: str | None = None) -> list[str]:
        return self._sentences.tokenize(text, language=language)

    def stream(self, *, language: str | None = None) -> tokenize.SentenceStream:
        sentences = self._sentences.stream(language=language)
        assert isinstance(sentences, BufferedSentenceStream)
        return _FirstClauseStream(sentences)


class _FirstClauseStream(BufferedSentenceStream):
    def __init__(self, like: BufferedSentenceStream) -> None:
        super().__init__(
            tokenizer=like._tokenize_fnc,
            min_token_len=like._min_token_len,
            min_ctx_len=like._min_ctx_len,
            max_token_len=like._max_token_len,
        )
        self._first = True

    def push_text(self, text: str) -> None:
        if not self._first:
            super().push_text(text)
            return
        self._check_not_closed()
        self._in_buf += text
        for match in CLAUSE_END.finditer(self._in_buf):
            clause = self._in_buf[: match.end()].strip()
            if len(clause.split()) >= MIN_CLAUSE_WORDS:
                self._event_ch.send_nowait(TokenData(token=clause, segment_id=self._current_segment_id))
                rest, self._in_buf, self._first = self._in_buf[match.end() :].lstrip(), "", False
                super().push_text(rest)
                return

    def flush(self) -> None:
        super().flush()
        self._first = True
