"""A sentence tokenizer for speech that lets the first clause go at once.

A reply's first words decide how fast the agent sounds: waiting for a whole first sentence costs the time the LLM
takes to write it (0.5-1.5 s on a small local model). So the first clause goes to the TTS as soon as it is complete:
at its punctuation ("Octopuses have three hearts,", a short sentence: "Hello!", or an opening word: "Sure,"), or where
a new phrase begins, before a word such as "because", "and", "in", "with" or "is" ("The sky is blue | because of
...", "The capital of Japan | is Tokyo."), the places a speaker would pause. While what has gone out is only a word or
two, the next piece is cut the same way, so that it is ready before that word has been said. The rest of the reply is
cut into whole sentences, which sound better, by livekit's own tokenizer; the LLM writes them while the first phrase
plays.
"""

from __future__ import annotations

import re

from livekit.agents import tokenize
from livekit.agents.tokenize.token_stream import BufferedSentenceStream
from livekit.agents.tokenize.tokenizer import TokenData

CLAUSE_END = re.compile(r"[,;:.!?](?=\s)")
ABBREVIATIONS = frozenset(["mr", "mrs", "ms", "dr", "st", "jr", "sr", "prof", "vs", "etc", "approx"])
WORD = re.compile(r"\S+(?=\s)")  # a word the LLM has finished writing
MIN_CLAUSE_WORDS = 3  # words before a phrase opener, or a clause's punctuation, unless a sentence or an opening word
# Words that open a new phrase: a pause before them sounds natural. Not "of" or "to", which bind to what precedes
# them ("the capital | of Japan", "I'd love | to help"). The verb after a long subject opens one too ("The capital of
# Japan | is Tokyo"), and so does "that" after three words ("Did you know | that octopuses ...").
OPENERS = (
    "because and but or so which who whose where when while if although though unless in on at with without "
    "for from by about as than like after before since until during through into over under between "
    "is are was were that"
)
PHRASE_OPENERS = frozenset(OPENERS.split())


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
        self._said = 0  # words sent as clauses

    def push_text(self, text: str) -> None:
        if not self._first:
            super().push_text(text)
            return
        self._check_not_closed()
        self._in_buf += text
        while self._first and (cut := first_cut(self._in_buf)) is not None:
            clause, self._in_buf = self._in_buf[:cut].strip(), self._in_buf[cut:].lstrip()
            self._event_ch.send_nowait(TokenData(token=clause, segment_id=self._current_segment_id))
            self._said += len(clause.split())
            # "Sure," plays for a third of a second: too short for the LLM to write a whole sentence meanwhile.
            self._first = self._said < MIN_CLAUSE_WORDS
        if not self._first:
            rest, self._in_buf = self._in_buf, ""
            super().push_text(rest)

    def flush(self) -> None:
        super().flush()
        self._first, self._said = True, 0


def first_cut(text: str) -> int | None:
    """Where the first clause of `text` (a reply as written so far) ends, or None while it is not complete."""
    words = 0
    for n, word in enumerate(WORD.finditer(text)):
        if n >= MIN_CLAUSE_WORDS and word.group().lower() in PHRASE_OPENERS:
            return word.start()
        if CLAUSE_END.match(text, word.end() - 1) and (n + 1 >= MIN_CLAUSE_WORDS or _short(word.group())):
            return word.end()
        words = n + 1
    # The word being written, when its punctuation cannot go on ("hearts," "Hello!", not "1," or "Dr."): it goes now,
    # not one token (60-90 ms) later when the next word's space arrives.
    last = LAST_WORD.search(text)
    # Likewise a phrase opener just written ("The capital of Japan is"): the LLM writes each as a token of its own, and
    # a word it then goes on into is rare ("that's", itself an opener) and only moves the pause.
    if last and words >= MIN_CLAUSE_WORDS and last.group().lower() in PHRASE_OPENERS:
        return last.start()
    if last and _final_punctuation(last.group()) and (words + 1 >= MIN_CLAUSE_WORDS or _short(last.group())):
        return last.end()
    return None


LAST_WORD = re.compile(r"\S+$")


def _final_punctuation(word: str) -> bool:
    """Whether `word` ends in punctuation that no further character can turn into part of a word or number (not a
    colon: "https:")."""
    mark, stem = word[-1], word[:-1]
    if mark in ",;!?":
        return stem[-1:].isalpha()
    return mark == "." and len(stem) >= 2 and stem.isalpha() and stem.lower() not in ABBREVIATIONS


def _short(word: str) -> bool:
    """Whether a piece of one or two words ending in `word` can be said on its own: a whole sentence ("Sure!", "Hello
    there."), or an opening ("Sure,", "Well,", "Hi there,"), not "Dr." or "1." or "3,"."""
    stem = word[:-1].lower()
    return word[-1] in ".!?," and stem.isalpha() and stem not in ABBREVIATIONS
