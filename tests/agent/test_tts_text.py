"""The TTS gets each piece of a plain reply the moment the LLM writes it, and markdown is still never spoken."""

from __future__ import annotations

import asyncio
import re

import pytest

from agent.tts_text import speakable


def llm_tokens(text: str) -> list[str]:
    """Pieces as an LLM streams them, whitespace included: a word with its leading space, punctuation alone."""
    return re.findall(r"\s*[\w']+|\s*[^\w\s]|\s+", text)


async def as_written(tokens: list[str]) -> list[tuple[str, int]]:
    """What `speakable` passes on, each piece with how many tokens the LLM had written when it came out."""
    queue: asyncio.Queue[str | None] = asyncio.Queue()
    written = [0]

    async def llm():
        while (token := await queue.get()) is not None:
            yield token

    out: list[tuple[str, int]] = []

    async def read() -> None:
        async for piece in speakable(llm()):
            out.append((piece, written[0]))

    reader = asyncio.create_task(read())
    for token in tokens:
        written[0] += 1
        queue.put_nowait(token)
        for _ in range(5):
            await asyncio.sleep(0)
    queue.put_nowait(None)
    await asyncio.wait_for(reader, 5)
    return out


async def test_plain_text_reaches_the_tts_as_it_is_written():
    tokens = llm_tokens("Octopuses have three hearts, and blue blood.")
    out = await as_written(tokens)
    assert "".join(p for p, _ in out) == "".join(tokens)
    # Each token went on before the next one was written: the comma that ends the first phrase is not held back.
    assert [n for _, n in out] == list(range(1, len(tokens) + 1))


@pytest.mark.parametrize(
    ("reply", "spoken"),
    [
        ("The capital is **Tokyo**, a huge city.", "The capital is Tokyo, a huge city."),
        ("- Sleep at the same time.\n- Avoid coffee.", "Sleep at the same time.\nAvoid coffee."),
        ("# Tips\nRun `sleep 8` and see [the guide](https://x.org).", "Tips\nRun sleep 8 and see the guide."),
        ("It is twenty-one degrees, and 5 - 3 is 2.", "It is twenty-one degrees, and 5 - 3 is 2."),
    ],
)
async def test_markdown_is_still_not_spoken(reply, spoken):
    out = await as_written(llm_tokens(reply))
    assert "".join(p for p, _ in out).strip() == spoken


def stripped(reply: str) -> str:
    """What `Markup` lets through of a reply streamed token by token."""
    from agent.tts_text import Markup

    markup = Markup()
    return ("".join(markup.feed(t) for t in llm_tokens(reply)) + markup.flush()).strip()


@pytest.mark.parametrize(
    ("reply", "said"),
    [
        # What a small model wrote instead of calling a tool, or around a tool's name: never said.
        ("The day today is <get_time>get_time</get_time>.", "The day today is ."),
        ("The day today is {{get_time}}.", "The day today is ."),
        ('Sure. {"name": "get_time", "arguments": {"location": "Paris"}}', "Sure."),
        ("You can call `convert_units` for that.", "You can call  for that."),
        ("I <b>can</b> help.", "I can help."),
        # Arithmetic and numbers as a person says them.
        ("12 * 4 = 48.", "12 times 4 equals 48."),
        ("So 35 / 3 is 11.666666666666666 each.", "So 35 divided by 3 is about 11.67 each."),
        ("That is **very** easy: 2 + 2 - 1 = 3.", "That is very easy: 2 plus 2 minus 1 equals 3."),
        (
            "Speeds in km/h, dates like 3/4, and 5-10 people stay.",
            "Speeds in km/h, dates like 3/4, and 5-10 people stay.",
        ),
        # Text that only looks like markup is kept.
        ("If 3 < 5 then yes.", "If 3 < 5 then yes."),
        (
            "Keep x <y and z apart, " + "then go on " * 8 + "to the end.",
            "Keep x y and z apart, " + "then go on " * 8 + "to the end.",
        ),
        ("Octopuses have three hearts.", "Octopuses have three hearts."),
    ],
)
def test_markup_and_tool_syntax_are_never_said(reply, said):
    assert stripped(reply) == said


async def test_markup_is_dropped_from_the_reply_itself_so_the_transcript_is_clean_too():
    from livekit.agents import llm

    from agent.tts_text import without_markup

    async def reply():
        yield "It is "
        yield llm.ChatChunk(id="a", delta=llm.ChoiceDelta(role="assistant", content="<get_"))
        yield llm.ChatChunk(id="a", delta=llm.ChoiceDelta(role="assistant", content="time> now."))
        yield llm.ChatChunk(id="a", usage=llm.CompletionUsage(completion_tokens=3, prompt_tokens=1, total_tokens=4))

    out = [c async for c in without_markup(reply())]
    text = "".join(c if isinstance(c, str) else (c.delta.content or "") if c.delta else "" for c in out)
    assert text == "It is  now."
    assert any(isinstance(c, llm.ChatChunk) and c.usage for c in out)
