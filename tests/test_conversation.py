"""runtime/conversation.py: which turns a conversation longer than the context keeps (no model: a
render that counts words stands in for the chat template and tokenizer)."""
from __future__ import annotations

import pytest

from runtime.conversation import ConversationTooLong, drop_oldest, fit_messages, reply_room


def render(messages):
    # a "prompt": one token per word, plus 3 per message for its role markers
    return [w for m in messages for w in ["<m>", m["role"], "</m>"] + m["content"].split()]


def chat(turns, words=10, system=True):
    out = [{"role": "system", "content": "be nice " * 5}] if system else []
    for i in range(turns):
        out.append({"role": "user", "content": f"q{i} " + "word " * words})
        out.append({"role": "assistant", "content": f"a{i} " + "word " * words})
    return out[:-1]                               # ends with the user's new message


def test_short_conversations_are_left_alone():
    messages = chat(3)
    prompt, dropped = fit_messages(messages, render, budget=1000, limit=1000)
    assert dropped == 0 and prompt == render(messages)


def test_keeps_the_system_prompt_and_the_newest_whole_turns():
    messages = chat(30)
    prompt, dropped = fit_messages(messages, render, budget=200, limit=250)
    kept = drop_oldest(messages, dropped)
    assert len(prompt) <= 200 and prompt == render(kept)
    assert kept[0]["role"] == "system" and kept[1]["role"] == "user" and kept[-1] == messages[-1]
    assert dropped % 2 == 0                        # user and assistant of a turn go together
    # at most a quarter of the budget is dropped beyond what was needed
    assert len(render(messages)) - len(prompt) < len(render(messages)) - 200 + 200 // 4 + 2 * 14


def test_the_cut_stays_put_while_the_conversation_grows():
    # a chat client resends the whole history: the kept prefix must not move every turn, so the
    # server's cache of it keeps serving (with a minimal cut it would move on every turn)
    cuts = [fit_messages(chat(n), render, budget=300, limit=400)[1] for n in range(10, 40)]
    assert cuts == sorted(cuts)
    moves = sum(a != b for a, b in zip(cuts, cuts[1:]))
    assert 0 < moves <= len(cuts) // 2


def test_too_long_even_alone_is_refused():
    messages = [{"role": "system", "content": "x " * 50}, {"role": "user", "content": "y " * 300}]
    with pytest.raises(ConversationTooLong, match="context holds 356"):
        fit_messages(messages, render, budget=200, limit=356)
    # over the budget but under the limit: taken, the reply gets less room
    prompt, dropped = fit_messages(messages, render, budget=200, limit=400)
    assert dropped == 0 and len(prompt) == len(render(messages))
    longer = chat(20)[:-1] + messages[1:]
    prompt, dropped = fit_messages(longer, render, budget=200, limit=400)
    assert prompt == render([longer[0], longer[-1]]) and dropped == len(longer) - 2


def test_reply_room():
    assert reply_room(512, 24) == 24 and reply_room(512, 4000) == 256 and reply_room(512, -1) == 128
