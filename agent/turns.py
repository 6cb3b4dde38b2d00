"""End of turn by what was said: the VAD's silence ends a turn unless the words so far cannot end a sentence.

"I'd like to book a table at" ... (a breath) ... "the Italian place" is one request. With VAD silence alone the
agent answers the first half while the person is still talking, and the second half becomes a turn of its own. Here
the transcript is checked when the silence comes: one that stops on a word that cannot end a sentence ("at", "the",
"and", "my", "um") or on a comma waits for more, up to ENDPOINTING_MAX_DELAY_S; anything else ends the turn at once,
so finished requests are answered as fast as with VAD alone. It costs microseconds (no model), and it also waits for
the transcript of the words after the pause, which livekit would otherwise commit without.

A livekit-agents turn detector (`turn_detection=TextTurnDetector()`); English only: for other languages livekit
falls back to VAD timing.
"""

from __future__ import annotations

import re

from livekit.agents import llm

FINISHED = 0.9
UNFINISHED = 0.05
THRESHOLD = 0.5

# Words that cannot end a sentence, whatever punctuation the STT put after them.
DANGLING = "a an the my your our their um uh er erm hmm umm"
# Words that end a wh-question ("where are you from?", "what is it about?"), not a statement or a yes/no question.
OPEN_ENDED = "and but or nor because if than to of in on at for with from by about into onto over under between through"
WH_WORDS = frozenset(re.findall(r"\S+", "what what's where where's who who's whom which how when why whose"))
NEVER_LAST = frozenset(DANGLING.split())
RARELY_LAST = frozenset(OPEN_ENDED.split())
TRAILING_OFF = re.compile(r"(,|;|:|-|\u2014|\.\.\.|\u2026)\s*$")


def unfinished(text: str) -> bool:
    """Whether a transcript stops where a sentence cannot end."""
    text = text.strip()
    words = re.findall(r"[a-z0-9']+", text.lower())
    if not words:
        return False
    if TRAILING_OFF.search(text):
        return True
    if words[-1] in NEVER_LAST:
        return True
    if words[-1] not in RARELY_LAST:
        return False
    # "Where are you from?" is finished; "Could you book me a table for?" is a fragment Whisper made a question of.
    return not (text.endswith(("?", "!")) and words[0] in WH_WORDS)


class TextTurnDetector:
    @property
    def model(self) -> str:
        return "text-completeness"

    @property
    def provider(self) -> str:
        return "voice-agent"

    async def unlikely_threshold(self, language: str | None) -> float | None:
        return THRESHOLD

    async def supports_language(self, language: str | None) -> bool:
        return language is None or str(language).lower().startswith("en")

    async def predict_end_of_turn(self, chat_ctx: llm.ChatContext, *, timeout: float | None = None) -> float:
        users = [i for i in chat_ctx.items if i.type == "message" and i.role == "user"]
        text = (users[-1].text_content or "") if users else ""
        return UNFINISHED if unfinished(text) else FINISHED
