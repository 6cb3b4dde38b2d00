"""A person who asks a question never loses their notes or their call.

Deleting notes, hanging up, transferring the call and saving a note happen only on an unambiguous request: never
on a question, reported or quoted speech, a negation, a hypothetical or "forget it" as a filler. The fast path lets
such near misses fall through to the LLM, and the tools check the person's words themselves, because the LLM may
call them on its own. Deleting notes is confirmed first, by a yes in the very next message.
"""

from __future__ import annotations

import asyncio
import functools

import pytest
from livekit.agents import AgentSession, llm

from agent import personas
from agent.group import request_of
from agent.main import Assistant, PersonaAgent
from agent.memory import MemoryStore
from agent.settings import get_settings
from agent.skills import CALL_GOES_ON, KEPT, SKILLS, CallContext, tools_for
from agent.skills.notes import NoteStore
from agent.skills.router import is_yes, route, transfer_destination, wants_end_call, wants_forget
from tests.support.scripted_llm import ScriptedLLM

ALL = {getattr(t, "id", "") for t in tools_for(SKILLS)} | {"end_call", "transfer_call"}
IRREVERSIBLE = {"forget_notes", "end_call", "save_note", "transfer_call"}

NEAR_MISSES = {
    "forget_notes": [
        "Should I clear my notes?",
        "Forget it, what are my notes?",
        "Don't delete my notes.",
        "Please don't erase my notes, I still need them.",
        "What happens if I delete my notes?",
        "How do I clear my notes?",
        "Can you delete notes?",
        "My wife told me to delete my notes.",
        "Forget it, never mind the notes.",
        "Forget it. Read me my notes.",
        'I said "delete my notes" by accident, ignore that.',
        "If I asked you to forget everything I told you, would you?",
        "Would deleting my notes also forget our calls?",
        "I never want you to forget my notes.",
        "Do not clear my notes.",
        "Why would I wipe my notes?",
        "Is there a way to erase all my notes?",
        "Did you delete my notes?",
        "You didn't delete my notes, did you?",
        "Don't forget my notes, please.",
        "Delete my notes? No, keep them.",
        "Maybe I should delete my notes later.",
        "Clear my notes after the meeting, not now.",
        "Forget it, what did I ask you to remember?",
        "I'm afraid I'll forget my notes.",
        "Should I forget everything I told you?",
    ],
    "end_call": [
        "Okay, how do you say goodbye?",
        "Thank you. My daughter just said bye bye.",
        "How do you say goodbye in French?",
        "Should I say goodbye now?",
        "Don't hang up, I have another question.",
        "Please don't end the call yet.",
        "What if I said goodbye?",
        "My son always says bye bye to the dog.",
        'She said "goodbye" and left.',
        "Why did you say goodbye?",
        "Bye? Where are you going?",
        "Thanks, but I'm not done yet.",
        "I said goodbye to my friend yesterday.",
        "Can you teach me how to say goodbye politely?",
        "Goodbye Yellow Brick Road is my favourite song.",
        "Is it rude to just hang up on someone?",
        "Thank you! What's the weather like?",
        "Wait, don't say goodbye yet.",
        "How do I end the call?",
        "Bye bye is what my toddler says to everyone.",
        "Okay thanks, and can you remind me what time it is?",
        "Remind me to say goodbye to grandma.",
        "Should I hang up and call back?",
        "He hung up on me. Bye, he said.",
        "Thanks, that's all for the recipe. What about dessert?",
        "Goodbye to you too? No wait, one more thing.",
    ],
    "save_note": [
        "Remember that time we went to Paris",
        "Remember when we met at the lake",
        "Remember the trip to Rome?",
        "Do you remember my name?",
        "Remember me?",
        "I remember that day at the beach.",
        "Remember the good old days",
        "Remember that summer in Spain",
        "Remember how much fun we had",
        "Don't remember that.",
        "Please don't save a note about this.",
        "Should I make a note of that?",
        "My teacher always said remember to breathe.",
        "If I say remember the milk, will you?",
        "Remember that?",
        "You remember that guy from the party?",
        "Remember that one time at band camp",
        "Remember my first car",
        "Remember those days when we were kids",
        "Remember back when phones had cords",
        "Remember what I told you yesterday?",
        "Can you remember things?",
        "Remember that song we danced to",
        "Remember the night we met",
        "Remember us",
        "Remember that we went skiing last winter",
    ],
    "transfer_call": [
        "Can I talk to my mom",
        "Can I talk to you about something?",
        "Can I speak with you for a minute?",
        "Can I talk to my doctor about this medication?",
        "Could I speak to your manager about my bill?",
        "Don't transfer me to the operator.",
        "My boss said transfer me to billing.",
        "Why did you transfer me to the operator?",
        "What happens if you transfer me to sales?",
        "How do I transfer money to my son?",
        "Can I talk to him later?",
        "Can I speak to them tomorrow?",
        "Can I talk to sales, or should I email them?",
        "Can I speak to a human if this doesn't work?",
        "I don't want to talk to a human.",
        "Can I talk to myself?",
        "If I wanted to, could I talk to the operator?",
        "Could you connect me to my email?",
        "Transfer me to the operator? No wait, never mind.",
        "Can I talk to someone about my order?",
        "Can I talk to the operator first, or later?",
        "Can I talk to my daughter when she gets home?",
        "I want to talk to you about my day.",
        "Could you put me to sleep with a story?",
    ],
}


@pytest.mark.parametrize(
    ("tool", "utterance"), [(tool, said) for tool, phrasings in NEAR_MISSES.items() for said in phrasings]
)
def test_a_near_miss_takes_no_irreversible_action(tool, utterance):
    found = route(utterance, ALL)
    # Falls through to the LLM (or, for "forget it, what are my notes?", reads the notes back).
    assert found is None or found.tool not in IRREVERSIBLE, found
    # The tools check the person's words with the same classifiers.
    assert not wants_forget(utterance) and not wants_end_call(utterance) and not transfer_destination(utterance)


@pytest.mark.parametrize(
    ("utterance", "tool", "arguments"),
    [
        ("Goodbye.", "end_call", {}),
        ("Bye!", "end_call", {}),
        ("Hang up please", "end_call", {}),
        ("That's all, thanks. Goodbye!", "end_call", {}),
        ("Thanks, that's all. Goodbye!", "end_call", {}),
        ("Okay, bye bye.", "end_call", {}),
        ("No thanks, that's all. Goodbye!", "end_call", {}),
        ("Thank you so much, have a nice day, bye!", "end_call", {}),
        ("See you later!", "end_call", {}),
        ("Could you end the call, please?", "end_call", {}),
        ("You can hang up now.", "end_call", {}),
        ("Delete all my notes", "forget_notes", {}),
        ("Forget my notes please", "forget_notes", {}),
        ("Forget everything I told you to remember.", "forget_notes", {}),
        ("Could you erase all of my notes?", "forget_notes", {}),
        ("Okay, clear my notes.", "forget_notes", {}),
        ("Save a note: buy milk", "save_note", {"text": "buy milk"}),
        ("Remember that the door code is 4561.", "save_note", {"text": "the door code is 4561"}),
        ("Please remember my parking spot is B12.", "save_note", {"text": "my parking spot is b12"}),
        ("Remember to call mom on Sunday.", "save_note", {"text": "to call mom on sunday"}),
        ("Make a note that the dentist is on Friday.", "save_note", {"text": "the dentist is on friday"}),
        ("Transfer me to the operator.", "transfer_call", {"destination": "operator"}),
        ("Put me through to billing, please.", "transfer_call", {"destination": "billing"}),
        ("Can I speak to a human?", "transfer_call", {"destination": "human"}),
        ("I'd like to speak to the front desk.", "transfer_call", {"destination": "front desk"}),
    ],
)
def test_an_unambiguous_request_still_takes_the_fast_path(utterance, tool, arguments):
    found = route(utterance, ALL)
    assert found is not None and (found.tool, found.arguments) == (tool, arguments)


@pytest.mark.parametrize(
    ("said", "yes"),
    [
        ("Yes.", True),
        ("Yes, delete them.", True),
        ("Yeah, go ahead.", True),
        ("Yes please", True),
        ("Yes?", False),
        ("Okay", False),
        ("No.", False),
        ("Yes, but first tell me the time.", False),
        ("Yes, no, wait.", False),
        ("Forget it", False),
        ("What?", False),
    ],
)
def test_only_an_explicit_yes_confirms(said, yes):
    assert is_yes(said) is yes


# Through the agent.


def notes_of(tmp_path, identity: str = "ana", count: int = 3) -> NoteStore:
    store = NoteStore(tmp_path / "agent.db")
    for n in range(count):
        store.add(identity, f"note number {n + 1}")
    return store


def reply_of(result) -> str:
    """What the agent said last in this turn."""
    said = [e.item.text_content for e in result.events if e.type == "message" and e.item.role == "assistant"]
    return said[-1].strip() if said else ""


def trigger_happy(tool: str, repeats: int = 2, about: str = ""):
    """An LLM that calls `tool` whatever the person says (that mentions `about`), and calls it again after its result
    (as the packaged 1.5B does), before speaking the tool's last answer."""

    def script(ctx: llm.ChatContext):
        items = list(ctx.items)
        start = max(i for i, item in enumerate(items) if item.type == "message" and item.role == "user")
        made = sum(1 for item in items[start:] if item.type == "function_call")
        if made < repeats and about in (items[start].text_content or "").lower():
            return (tool, {})
        return f"{items[-1].output}" if items[-1].type == "function_call_output" else "Okay."

    return script


@pytest.fixture
def llm_path(monkeypatch):
    monkeypatch.setattr(get_settings(), "skill_fast_path", False)


async def test_an_llm_calling_forget_notes_on_near_misses_deletes_nothing(tmp_path, llm_path):
    notes = notes_of(tmp_path)
    memory = MemoryStore(tmp_path / "agent.db")
    memory.add("ana", "user", "I love sailing")
    scripted = ScriptedLLM(trigger_happy("forget_notes"))
    caller = CallContext(identity="ana", notes=notes, memory=memory)
    outputs: list[str] = []
    async with scripted, AgentSession(llm=scripted, userdata=caller) as session:
        await session.start(Assistant())
        for said in NEAR_MISSES["forget_notes"][:12]:
            result = await session.run(user_input=said)
            outputs += [e.item.output for e in result.events if e.type == "function_call_output"]
        assert notes.count("ana") == 3 and memory.recent("ana", 10)
        assert len(outputs) == 24 and not any(out.startswith("Done") for out in outputs)
        # A negation is not even asked about.
        denied = await session.run(user_input="Don't delete my notes.")
        assert "nothing was deleted" in reply_of(denied)
        # The LLM path does delete, on a request and then a yes.
        asked = await session.run(user_input="Delete all my notes.")
        assert reply_of(asked) == "Delete all 3 of your notes and forget our earlier calls? Say yes to confirm."
        assert notes.count("ana") == 3
        done = await session.run(user_input="Yes.")
        outputs = [e.item.output for e in done.events if e.type == "function_call_output"]
        assert outputs[0] == "Done. I deleted 3 notes and forgot our earlier calls."
        assert reply_of(done).startswith("Done.")  # the repeated call says so again, and deletes nothing more
    assert notes.count("ana") == 0 and memory.recent("ana", 10) == []


async def test_a_yes_confirms_only_the_question_just_asked(tmp_path, llm_path):
    notes = notes_of(tmp_path)
    scripted = ScriptedLLM(trigger_happy("forget_notes", about="notes"))
    async with scripted, AgentSession(llm=scripted, userdata=CallContext(identity="ana", notes=notes)) as session:
        await session.start(Assistant())
        await session.run(user_input="Should I clear my notes?")  # the LLM asks to confirm: a question is harmless
        await session.run(user_input="What's the weather like?")  # ... and the person moved on
        await session.run(user_input="Yes.")  # a yes to something else
        assert notes.count("ana") == 3


async def test_an_llm_calling_end_call_on_near_misses_keeps_the_call(llm_path):
    scripted = ScriptedLLM(trigger_happy("end_call", repeats=1))
    closed = asyncio.Event()
    async with scripted, AgentSession(llm=scripted, userdata=CallContext()) as session:
        session.on("close", lambda _ev: closed.set())
        await session.start(Assistant())
        for said in NEAR_MISSES["end_call"][:10]:
            result = await session.run(user_input=said)
            output = next(e.item.output for e in result.events if e.type == "function_call_output")
            assert output == CALL_GOES_ON, said
        await asyncio.sleep(0.5)
        assert not closed.is_set()
        # A real goodbye still ends it.
        await session.run(user_input="Thanks, that's all. Goodbye!")
        await asyncio.wait_for(closed.wait(), 10)


def no_llm(ctx):
    raise AssertionError("the LLM was asked")


async def test_deleting_notes_on_the_fast_path_asks_first_and_a_yes_deletes(tmp_path):
    notes = notes_of(tmp_path)
    memory = MemoryStore(tmp_path / "agent.db")
    memory.add("ana", "user", "I love sailing")
    scripted = ScriptedLLM(no_llm)
    caller = CallContext(identity="ana", notes=notes, memory=memory)
    async with scripted, AgentSession(llm=scripted, userdata=caller) as session:
        await session.start(Assistant())
        asked = await session.run(user_input="Delete all my notes.")
        assert reply_of(asked) == "Delete all 3 of your notes and forget our earlier calls? Say yes to confirm."
        assert notes.count("ana") == 3
        done = await session.run(user_input="Yes.")
        assert reply_of(done) == "Done. I deleted 3 notes and forgot our earlier calls."
    assert notes.count("ana") == 0 and memory.recent("ana", 10) == []
    assert scripted.calls == []


async def test_a_no_or_anything_else_keeps_the_notes(tmp_path):
    notes = notes_of(tmp_path)
    scripted = ScriptedLLM(lambda ctx: "Sure, what else?")
    async with scripted, AgentSession(llm=scripted, userdata=CallContext(identity="ana", notes=notes)) as session:
        await session.start(Assistant())
        await session.run(user_input="Delete my notes")
        kept = await session.run(user_input="No.")
        assert reply_of(kept) == KEPT
        late = await session.run(user_input="Yes.")  # the question was answered: this yes deletes nothing
        assert reply_of(late) == "Sure, what else?"
        assert notes.count("ana") == 3
        await session.run(user_input="Forget my notes please")
        await session.run(user_input="What time is it in Tokyo?")  # anything else cancels it too
        late = await session.run(user_input="Yes")
        assert reply_of(late) == "Sure, what else?"
        # A no to something else is not taken for an answer to the question long gone.
        assert reply_of(await session.run(user_input="No.")) == "Sure, what else?"
        assert notes.count("ana") == 3


async def test_with_no_notes_there_is_nothing_to_delete(tmp_path):
    notes = notes_of(tmp_path, count=0)
    scripted = ScriptedLLM(no_llm)
    async with scripted, AgentSession(llm=scripted, userdata=CallContext(identity="ana", notes=notes)) as session:
        await session.start(Assistant())
        result = await session.run(user_input="Delete all my notes")
        assert reply_of(result) == "You have no saved notes, so there is nothing to delete."


async def test_with_no_notes_but_earlier_calls_remembered_forgetting_them_is_confirmed_too(tmp_path):
    notes = notes_of(tmp_path, count=0)
    memory = MemoryStore(tmp_path / "agent.db")
    memory.add("ana", "user", "I love sailing")
    scripted = ScriptedLLM(no_llm)
    caller = CallContext(identity="ana", notes=notes, memory=memory)
    async with scripted, AgentSession(llm=scripted, userdata=caller) as session:
        await session.start(Assistant())
        asked = await session.run(user_input="Forget everything I told you.")
        assert reply_of(asked) == "You have no saved notes. Shall I forget our earlier calls? Say yes to confirm."
        assert memory.recent("ana", 10)
        done = await session.run(user_input="Yes, go ahead.")
        assert reply_of(done) == "Done. I forgot our earlier calls."
    assert memory.recent("ana", 10) == []


async def test_a_near_miss_goodbye_on_the_fast_path_is_answered_and_the_call_goes_on():
    scripted = ScriptedLLM(lambda ctx: "You say goodbye.")
    closed = asyncio.Event()
    async with scripted, AgentSession(llm=scripted, userdata=CallContext()) as session:
        session.on("close", lambda _ev: closed.set())
        await session.start(Assistant())
        result = await session.run(user_input="Okay, how do you say goodbye?")
        assert reply_of(result) == "You say goodbye."
        await asyncio.sleep(0.5)
        assert not closed.is_set()


async def test_in_a_group_only_the_person_asked_can_confirm(tmp_path):
    notes = notes_of(tmp_path)
    caller = CallContext(identity="ana", notes=notes)
    scripted = ScriptedLLM(lambda ctx: "Hm?")
    agent = PersonaAgent(personas.get("assistant"))
    agent.request_of = functools.partial(request_of, names=["Jarvis"])
    async with scripted, AgentSession(llm=scripted, userdata=caller) as session:
        await session.start(agent)
        asked = await session.run(user_input="Ana: Jarvis, delete my notes.")
        assert "Say yes to confirm" in reply_of(asked)
        caller.identity = "bob"  # as agent/group.py sets it for each person it answers
        await session.run(user_input="Bob: Yes.")
        assert notes.count("ana") == 3
        caller.identity = "ana"
        await session.run(user_input="Ana: Jarvis, delete my notes.")
        done = await session.run(user_input="Ana: Yes.")
        assert reply_of(done).startswith("Done. I deleted 3 notes")
    assert notes.count("ana") == 0


@pytest.mark.models
@pytest.mark.timeout(300)
async def test_the_local_llm_on_near_misses_never_deletes_notes_nor_hangs_up(tmp_path, llm_path, monkeypatch):
    """Whatever the packaged 1.5B makes of these (it did call forget_notes on "Should I clear my notes?"), the notes
    survive and the call goes on. About 30-60 s on 2 cores, most of it the first prompt."""
    pytest.importorskip("llama_cpp")
    from agent.models import packaged_gguf
    from agent.providers.llama_llm import LlamaLLM

    monkeypatch.setattr(get_settings(), "agent_skills", "notes,end_call")  # a shorter prompt to read

    notes = notes_of(tmp_path, count=2)
    model = LlamaLLM(model_path=str(packaged_gguf()), temperature=0.0, max_tokens=40)
    closed = asyncio.Event()
    async with model, AgentSession(llm=model, userdata=CallContext(identity="ana", notes=notes)) as session:
        session.on("close", lambda _ev: closed.set())
        await session.start(Assistant())
        for said in [
            "Should I clear my notes?",
            "Forget it, what are my notes?",
            "Don't delete my notes.",
            "Okay, how do you say goodbye?",
            "Thank you. My daughter just said bye bye.",
            "Don't hang up, I have another question.",
        ]:
            await session.run(user_input=said)
            assert notes.count("ana") == 2, said
        await asyncio.sleep(0.5)
        assert not closed.is_set()
