"""Several conversations at once (`--parallel`): a real SmolLM2 server on 127.0.0.1 with 4 slots, driven
by the official `openai` client. Concurrent greedy streams get exactly the text each gets alone, a new
request is admitted while others stream, and requests under different API keys never share a cached
prompt (the probing attack of SECURITY.md)."""
from __future__ import annotations

import threading
import time

import httpx2 as httpx
import openai
import pytest

from server_helpers import smollm2_model, start_server  # noqa: F401

PROMPTS = ["Write a long story about a dragon who learns to bake bread.",
           "Describe, in detail, how a steam engine works.",
           "Tell me everything you know about the history of the bicycle.",
           "Write a long letter to a friend about a trip to the mountains.",
           # over 128 tokens: read in runs of 64 between the others' decode steps (server_engine.PREFILL_CHUNK)
           "Here are my notes from a week of travelling by train. " * 14 + "Summarize them."]


@pytest.fixture(scope="module")
def server(smollm2_model):
    s = start_server(smollm2_model, n_slots=4, n_ctx=1024)
    yield s
    s.stop()


def client(url, key="unused"):
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=300)


def greedy_text(c, prompt, max_tokens, stream=False):
    kw = dict(model="m", messages=[{"role": "user", "content": prompt}], temperature=0, max_tokens=max_tokens,
              extra_body={"cache_prompt": False})
    if not stream:
        return c.chat.completions.create(**kw).choices[0].message.content
    return "".join(ch.choices[0].delta.content or "" for ch in c.chat.completions.create(stream=True, **kw)
                   if ch.choices)


@pytest.mark.slow
def test_concurrent_greedy_streams_equal_each_alone(server):
    """Five greedy streams on four slots: each gets exactly its text alone. The last comes in once the
    others are generating: it waits for a free slot, then its long prompt is read in runs between the
    others' decode steps."""
    c = client(server.url)
    alone = [greedy_text(c, p, 40) for p in PROMPTS]
    together = [None] * len(PROMPTS)

    def run(i):
        together[i] = greedy_text(c, PROMPTS[i], 40, stream=True)
    steps = server.engine.n_steps
    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(PROMPTS))]
    for t in threads[:-1]:
        t.start()
    deadline = time.monotonic() + 300
    while not any(v.n_decoded for v in server.engine.slot_views()) and time.monotonic() < deadline:
        time.sleep(0.01)
    threads[-1].start()
    for t in threads:
        t.join()
    assert together == alone
    # they ran together: one forward pass carried the decode rows of at least 3 streams, and there were
    # fewer passes than the 5 x 40 tokens of the streams one after another
    assert server.engine.peak_decoding >= 3
    assert server.engine.n_steps - steps < len(PROMPTS) * 40


@pytest.mark.slow
def test_long_prompts_sent_together_are_read_together(server):
    """Three long prompts sent while another request streams: read side by side, PREFILL_CHUNK tokens of
    each per pass (the last run of each among the decode rows), every text equal to its text alone."""
    c = client(server.url)
    long = [f"Here are my notes from a week of travelling by {what}. " * 12 + "Summarize them."
            for what in ("train", "bus", "boat")]
    prompts = [PROMPTS[0]] + long
    alone = [greedy_text(c, p, 16) for p in prompts]
    server.engine.peak_reading = 0
    together = [None] * len(prompts)

    def run(i):
        together[i] = greedy_text(c, prompts[i], 16 if i else 48, stream=True)
    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(prompts))]
    threads[0].start()
    deadline = time.monotonic() + 300
    while not any(v.n_decoded for v in server.engine.slot_views()) and time.monotonic() < deadline:
        time.sleep(0.01)
    for t in threads[1:]:
        t.start()
    for t in threads:
        t.join()
    assert together[1:] == alone[1:] and together[0].startswith(alone[0])
    if server.engine.shared_prefill:      # the integer GEMM (AVX-512 VNNI); elsewhere one prompt a pass
        assert server.engine.peak_reading >= 2


# ---- conversations longer than the context ---------------------------------------------------------

SYSTEM = "You are a cheerful assistant who always answers briefly."


def test_thirty_turn_chat_in_a_512_token_context(smollm2_model):
    """Every turn of a 30-turn chat is answered in a 512-token context: the server keeps the system
    prompt and the newest turns and says how many messages it dropped (in the first chunk of a stream
    too). /slots (with --slots) shows the kept conversation starting with the system prompt."""
    server = start_server(smollm2_model, n_ctx=512, slots_prompts=True)
    REPLY = 8                                       # tokens a reply: 30 turns still fill the context 2x
    try:
        c = client(server.url)
        messages = [{"role": "system", "content": SYSTEM}]
        dropped, answered = [], 0
        for turn in range(30):
            messages.append({"role": "user", "content": f"Question {turn}: tell me one fact about the number "
                                                        f"{turn * 7 + 3} and why it is interesting."})
            if turn < 29:
                r = c.chat.completions.create(model="m", messages=messages, temperature=0, max_tokens=REPLY)
                reply = r.choices[0].message.content
                dropped.append((r.model_extra or {}).get("dropped_messages", 0))
                assert r.usage.prompt_tokens + REPLY <= 512 and r.usage.completion_tokens >= 1
                assert r.choices[0].finish_reason in ("stop", "length")
            else:                                   # the last turn streams: the first chunk says it
                chunks = list(c.chat.completions.create(model="m", messages=messages, temperature=0,
                                                        max_tokens=REPLY, stream=True))
                reply = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
                dropped.append((chunks[0].model_extra or {}).get("dropped_messages", 0))
                assert all("dropped_messages" not in (ch.model_extra or {}) for ch in chunks[1:])
            answered += bool(reply.strip())
            messages.append({"role": "assistant", "content": reply})
        assert answered >= 28          # a greedy reply may rarely be the end token alone: not a refusal
        assert dropped[0] == 0 and dropped[-1] > 0 and dropped == sorted(dropped)
        assert all(n % 2 == 0 for n in dropped)      # whole turns: user and assistant together
        prompt = next(s["prompt"] for s in httpx.get(server.url + "/slots", timeout=30).json())
        assert SYSTEM in prompt and "Question 29" in prompt and "Question 0:" not in prompt
    finally:
        server.stop()


def test_a_message_too_long_for_the_context_is_refused(smollm2_model):
    server = start_server(smollm2_model, n_ctx=128)
    try:
        with pytest.raises(openai.BadRequestError) as e:
            client(server.url).chat.completions.create(
                model="m", max_tokens=8, messages=[{"role": "user", "content": "word " * 200}])
        assert e.value.code == "context_length_exceeded" and "128" in e.value.message
    finally:
        server.stop()


def test_context_shift_keeps_a_generation_going(smollm2_model):
    """--context-shift: a reply longer than what is left of the context goes on (llama.cpp's shift:
    keep n_keep, drop half of the rest); without it the reply ends with "length" at the full context."""
    prompt = [{"role": "user", "content": PROMPTS[0]}]
    for shift in (False, True):
        server = start_server(smollm2_model, n_ctx=96, context_shift=shift)
        try:
            # without a shift max_tokens is at most the context (llama-server accepts any n_predict)
            r = client(server.url).chat.completions.create(model="m", messages=prompt, temperature=0,
                                                           max_tokens=120 if shift else 96,
                                                           extra_body={"n_keep": 4})
            assert r.choices[0].finish_reason == "length"
            n = r.usage.completion_tokens
            if shift:
                assert n == 120                    # more than the context holds: it was shifted
            else:
                assert r.usage.prompt_tokens + n == 96 + 1     # the last token sampled needs no position
        finally:
            server.stop()


# ---- GET /slots and the prompt cache between clients -------------------------------------------------

def test_slots_endpoint(server):
    slots = httpx.get(server.url + "/slots", timeout=30).json()
    assert [s["id"] for s in slots] == [0, 1, 2, 3]
    for s in slots:
        assert s["n_ctx"] == 1024 and s["is_processing"] is False
        assert s["params"]["temperature"] == 0.8 and "prompt" not in s      # no text without --slots
        assert set(s["next_token"]) >= {"has_next_token", "n_remain", "n_decoded"}
    r = httpx.get(server.url + "/slots?fail_on_no_slot=1", timeout=30)
    assert r.status_code == 200


SECRET = "You guard the vault. The vault code is 7391. Never tell anyone the vault code."


def probe(c, digit):
    """A guess at the secret's next digit: how many prompt tokens the server says it had cached."""
    r = c.chat.completions.create(model="m", max_tokens=1, temperature=0, messages=[
        {"role": "system", "content": f"You guard the vault. The vault code is {digit}"},
        {"role": "user", "content": "hi"}])
    return r.usage.prompt_tokens_details.cached_tokens


@pytest.mark.parametrize("n_slots", [1, 2])
def test_prompt_cache_probing_across_api_keys(smollm2_model, n_slots):
    """The attack of SECURITY.md: a client guesses another's system prompt one token at a time and reads
    `cached_tokens`. Under the victim's own key the guess that matches stands out (the cache is shared
    within one identity, as documented); under another key every guess sees the same, nothing of the
    victim's prompt."""
    server = start_server(smollm2_model, n_slots=n_slots, n_ctx=256, api_keys=("alice", "mallory"),
                          slots_prompts=True)
    try:
        alice, mallory = client(server.url, "alice"), client(server.url, "mallory")

        def victim():
            alice.chat.completions.create(model="m", max_tokens=1, messages=[
                {"role": "system", "content": SECRET}, {"role": "user", "content": "hi"}])

        victim()
        as_alice = {}
        for d in "0123456789":
            as_alice[d] = probe(alice, d)
            victim()                                # the victim's prompt back in its slot
        assert max(as_alice, key=as_alice.get) == "7" and sorted(as_alice.values())[-2] < as_alice["7"]

        probe(mallory, "")                           # mallory's own earlier probes do count: start equal
        victim()
        as_mallory = {}
        for d in "0123456789":
            as_mallory[d] = probe(mallory, d)
            victim()
        assert len(set(as_mallory.values())) == 1, as_mallory    # no guess stands out
        # and /slots shows mallory no text of alice's slots, even with --slots
        for s in httpx.get(server.url + "/slots", headers={"Authorization": "Bearer mallory"}, timeout=30).json():
            assert "vault code is 7391" not in s.get("prompt", "")
    finally:
        server.stop()


def test_terminal_chat_drops_its_oldest_turns(smollm2_path):
    """The terminal chat in a small context: every message gets a reply; once the conversation outgrows
    the context, one dimmed line says how many of the oldest messages were dropped."""
    import os
    import subprocess
    import sys
    from server_helpers import ROOT
    questions = [f"Tell me something about the number {n * 11}." for n in range(10)]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-m", "runtime", "-m", str(smollm2_path), "--chat", "--temp", "0",
                        "-n", "12", "-c", "160", "--system", SYSTEM],
                       input="\n".join(questions + ["/exit"]).encode(), capture_output=True, cwd=ROOT, env=env,
                       timeout=600)
    assert r.returncode == 0, r.stderr.decode()
    err = r.stderr.decode()
    notices = [line for line in err.splitlines() if "no longer fit the context of 160 tokens" in line]
    assert notices and all("dropped" in n for n in notices)
    assert err.count("tok/s") == len(questions)             # one stats line per reply: every one answered
    assert "does not fit" not in err
