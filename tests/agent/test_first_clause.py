"""The TTS gets a reply's first phrase as soon as the LLM has written it, and then whole sentences; no word is lost."""

from __future__ import annotations

import asyncio
import re

import pytest

from agent.providers.first_clause import FirstClauseTokenizer


def llm_tokens(text: str) -> list[str]:
    """Pieces as an LLM streams them: a word with its leading space, punctuation on its own."""
    return re.findall(r" ?[\w']+|[^\w\s]", text)


async def speak_pieces(reply: str) -> list[tuple[str, int]]:
    """What the TTS receives, each piece with how many LLM tokens had been pushed when it came out."""
    stream = FirstClauseTokenizer().stream()
    out: list[tuple[str, int]] = []
    pushed = [0]

    async def read() -> None:
        async for piece in stream:
            out.append((piece.token, pushed[0]))

    reader = asyncio.create_task(read())
    for token in llm_tokens(reply):
        stream.push_text(token)
        pushed[0] += 1
        await asyncio.sleep(0)  # let the reader see what is ready after each token
    stream.end_input()
    await asyncio.wait_for(reader, 5)
    return out


@pytest.mark.parametrize(
    ("reply", "first"),
    [
        ("The sky is blue because of the way sunlight scatters in the air.", "The sky is blue"),
        ("The largest planet in the solar system is Jupiter.", "The largest planet"),
        ("Try going to bed at the same time every night and avoid caffeine.", "Try going to bed"),
        ("Octopuses have three hearts, and blue blood.", "Octopuses have three hearts,"),
        ("Why was the math book sad? Because it had too many problems.", "Why was the math book sad?"),
        ("The capital of Japan is Tokyo. It is a huge city.", "The capital of Japan"),
        ("What is the capital of Japan? It is Tokyo.", "What is the capital of Japan?"),
        ("Did you know that octopuses have three hearts?", "Did you know"),
        ("Hello! I'm just a computer program, but I'm here to help.", "Hello!"),
        ("Sure. Here is a name for a black cat: Shadow.", "Sure."),
    ],
)
async def test_the_first_phrase_goes_out_before_the_sentence_is_finished(reply, first):
    pieces = await speak_pieces(reply)
    assert pieces[0][0] == first
    # It left as soon as the word after it was written, long before the reply was.
    assert pieces[0][1] <= len(llm_tokens(first)) + 2 < len(llm_tokens(reply))
    assert " ".join(p for p, _ in pieces).split() == reply.split()  # every word reaches the TTS once, in order


@pytest.mark.parametrize(
    ("reply", "first"),
    [
        ("Octopuses have three hearts, and blue blood.", "Octopuses have three hearts,"),
        ("Hello! I'm here to help.", "Hello!"),
        ("Why was the math book sad? Because it had too many problems.", "Why was the math book sad?"),
    ],
)
async def test_final_punctuation_sends_the_first_phrase_without_waiting_for_the_next_word(reply, first):
    pieces = await speak_pieces(reply)
    assert pieces[0] == (first, len(llm_tokens(first)))


@pytest.mark.parametrize(
    ("reply", "first"),
    [
        ("The capital of Japan is Tokyo.", "The capital of Japan"),
        ("Romeo and Juliet was written by William Shakespeare.", "Romeo and Juliet"),
        ("The sky is blue because of the way sunlight scatters.", "The sky is blue"),
        ("Did you know that octopuses have three hearts?", "Did you know"),
    ],
)
async def test_a_phrase_opener_sends_the_phrase_before_it_as_soon_as_it_is_written(reply, first):
    pieces = await speak_pieces(reply)
    assert pieces[0] == (first, len(llm_tokens(first)) + 1)  # on the opener's token, not the next word's


async def test_punctuation_that_may_go_on_waits_for_the_next_word():
    # "3," may become "3,000"; "U." may become "U.S.".
    assert (await speak_pieces("It costs 3,000 dollars, more or less."))[0][0] == "It costs 3,000 dollars,"
    assert (await speak_pieces("I live in the U.S. now, you know."))[0][0] == "I live in the U.S."


async def test_an_opening_word_goes_alone_and_the_next_phrase_follows_before_the_sentence_ends():
    reply = "Sure, the capital of France is Paris, a city I would love to visit."
    pieces = await speak_pieces(reply)
    # "Sure," plays for a third of a second: the next phrase goes as a phrase too ("of" binds to what precedes it),
    # not as a whole sentence, which the LLM would not have written by then.
    assert [p for p, _ in pieces[:2]] == ["Sure,", "the capital of France"]
    assert pieces[0][1] == len(llm_tokens("Sure,"))
    assert pieces[1][1] <= len(llm_tokens("Sure, the capital of France is Paris"))  # "is" may be "isolated"
    assert " ".join(p for p, _ in pieces).split() == reply.split()


async def test_binding_words_and_short_numbers_do_not_cut_a_phrase_apart():
    assert (await speak_pieces("I would love to help you with that."))[0][0] == "I would love to help you"
    assert (await speak_pieces("3, 2, 1, go!"))[0][0] == "3, 2, 1,"


async def test_abbreviations_and_numbers_do_not_end_a_first_sentence():
    assert (await speak_pieces("Dr. Watson lived in London."))[0][0] == "Dr. Watson lived"
    assert (await speak_pieces("1. Paris is a city in France."))[0][0] == "1. Paris is a city"


async def test_a_reply_without_any_break_is_spoken_whole():
    pieces = await speak_pieces("Yes.")
    assert [p for p, _ in pieces] == ["Yes."]
