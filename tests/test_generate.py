"""The generator on the real SmolLM2: greedy = argmax of Model.logits, stop strings, limits, seeds, reuse."""
from __future__ import annotations

import numpy as np
import pytest

import runtime
from runtime.generate import PromptTooLong, generate, hold_back
from runtime.sampler import SamplingParams

GREEDY = SamplingParams(temperature=0)
PROMPT = "The capital of France is"
# Kernels round differently in prefill (many rows) and decode (one row): logits of the same prefix
# differ by up to ~0.6 between the two paths, so only a clear winner must match exactly.
CLEAR_MARGIN = 1.0


@pytest.fixture(scope="module")
def model(smollm2_path):
    return runtime.load(smollm2_path)


@pytest.fixture(scope="module")
def prompt_ids(model):
    return model.tokenize(PROMPT, add_special=True, parse_special=True)


@pytest.fixture(scope="module")
def greedy_run(model, prompt_ids):
    """16 greedy pieces from a fresh session: (pieces, generation). (Not more: at step 19 llama.cpp's
    '\n' leads the end-of-text token by 0.18, and which wins here depends on summation order.)"""
    gen = generate(model, model.new_session(), prompt_ids, GREEDY, max_tokens=16)
    return list(gen), gen


def test_greedy_is_the_argmax_chain_of_model_logits(model, prompt_ids, greedy_run):
    pieces, gen = greedy_run
    ids = [p.token_id for p in pieces]
    assert gen.finish_reason == "length" and gen.n_generated == 16 and not gen.context_full
    exact = 0
    for i, token in enumerate(ids):
        logits = model.logits(prompt_ids + ids[:i])            # from an empty context, one prefill
        top2 = np.sort(logits)[-2:]
        if top2[1] - top2[0] > CLEAR_MARGIN:
            assert token == int(np.argmax(logits)), f"step {i}"
            exact += 1
        else:                                                   # a near tie: either may win
            assert logits[token] >= top2[1] - CLEAR_MARGIN, f"step {i}"
    assert exact >= len(ids) // 2
    assert "".join(p.text for p in pieces) == model.detokenize(ids)


def test_logprobs_are_log_softmax_of_raw_logits(model, prompt_ids):
    gen = generate(model, model.new_session(), prompt_ids, GREEDY, max_tokens=3, logprobs=5)
    pieces = list(gen)
    ids = [p.token_id for p in pieces]
    for i, p in enumerate(pieces):
        z = model.logits(prompt_ids + ids[:i]).astype(np.float64)
        ref = z - (z.max() + np.log(np.exp(z - z.max()).sum()))
        assert abs(p.logprob - ref[p.token_id]) < 0.15            # prefill vs decode rounding
        assert [t for t, _ in p.top_logprobs][0] == p.token_id    # greedy picks the most likely
        assert len(p.top_logprobs) == 5
        lps = [lp for _, lp in p.top_logprobs]
        assert lps == sorted(lps, reverse=True) and all(lp <= 0 for lp in lps)
    no = list(generate(model, model.new_session(), prompt_ids, GREEDY, max_tokens=2))
    assert all(p.logprob is None and p.top_logprobs is None for p in no)


def test_stop_string_across_token_boundary(model, prompt_ids, greedy_run):
    pieces, _ = greedy_run
    texts = [p.text for p in pieces]
    full = "".join(texts)
    # a stop string made of the end of one token's text and the start of the next's
    k = next(i for i in range(3, len(texts) - 1) if len(texts[i]) >= 2 and len(texts[i + 1]) >= 2)
    stop = texts[k][-2:] + texts[k + 1][:2]
    at = full.find(stop)
    gen = generate(model, model.new_session(), prompt_ids, GREEDY, max_tokens=16, stop=["never-there", stop])
    out = list(gen)
    text = "".join(p.text for p in out)
    assert gen.finish_reason == "stop" and not gen.context_full
    assert text == full[:at] and stop not in text
    assert [p.token_id for p in out] == [p.token_id for p in pieces[:len(out)]]
    # the token before the one completing the stop string released nothing of the stop string's start
    assert not "".join(p.text for p in out[:-1]).endswith(stop[:2])


def test_stop_string_prefix_is_released_when_it_does_not_complete(model, prompt_ids, greedy_run):
    pieces, _ = greedy_run
    full = "".join(p.text for p in pieces)
    last = pieces[-1].text
    stop = last + "\u2603 never"                   # its start is the very last text generated
    gen = generate(model, model.new_session(), prompt_ids, GREEDY, max_tokens=16, stop=[stop])
    out = list(gen)
    assert "".join(p.text for p in out) == full
    assert out[-1].text.endswith(last) and gen.finish_reason == "length"


def test_hold_back():
    assert hold_back("hello wor", ["world"]) == 6
    assert hold_back("hello", ["xyz"]) == 5
    assert hold_back("ab", ["abc", "b!"]) == 0
    assert hold_back("aab", ["abc"]) == 1


def test_max_tokens(model, prompt_ids):
    for n in (0, 1, 5):
        gen = generate(model, model.new_session(), prompt_ids, GREEDY, max_tokens=n)
        assert len(list(gen)) == n and gen.n_generated == n
        assert gen.finish_reason == "length" and not gen.context_full


def test_seed_reproducibility(model, prompt_ids):
    def run(seed):
        params = SamplingParams(temperature=1.2, top_k=0, top_p=1.0, min_p=0.0, seed=seed)
        return [p.token_id for p in generate(model, model.new_session(), prompt_ids, params, max_tokens=12)]
    a, b, c = run(7), run(7), run(8)
    assert a == b
    assert a != c


def test_prefix_reuse_counts_cached_tokens(model, prompt_ids):
    session = model.new_session()
    first = generate(model, session, prompt_ids, GREEDY, max_tokens=6)
    ids = [p.token_id for p in first]
    assert first.n_cached == 0 and first.n_prompt == len(prompt_ids)
    assert session.tokens == prompt_ids + ids[:-1]       # the last token was sampled, never evaluated
    follow = prompt_ids + ids + model.tokenize(" Also,", add_special=False)
    second = generate(model, session, follow, GREEDY, max_tokens=4)
    out = [p.token_id for p in second]
    assert second.n_cached == len(prompt_ids) + len(ids) - 1 and second.n_prompt == len(follow)
    logits = model.logits(follow)
    assert logits[out[0]] >= logits.max() - CLEAR_MARGIN
    # the same prompt again: everything but the last token comes from the cache
    third = generate(model, session, follow, GREEDY, max_tokens=1)
    list(third)
    assert third.n_cached == len(follow) - 1
    # a different prompt shares only its common prefix
    fourth = generate(model, session, prompt_ids[:2] + [504], GREEDY, max_tokens=1)
    list(fourth)
    assert fourth.n_cached == 2


def test_context_full_stops_cleanly(model, prompt_ids):
    session = model.new_session(n_ctx=len(prompt_ids) + 3)
    gen = generate(model, session, prompt_ids, GREEDY, max_tokens=-1)
    pieces = list(gen)
    # 3 tokens fill the cache; a 4th is still sampled from the last logits, then the generation ends
    assert len(pieces) == 4 and gen.n_generated == 4
    assert gen.finish_reason == "length" and gen.context_full
    assert len(session.tokens) == session.n_ctx
    with pytest.raises(PromptTooLong, match="context holds"):
        generate(model, model.new_session(n_ctx=4), prompt_ids + prompt_ids, GREEDY)
    with pytest.raises(ValueError, match="empty prompt"):
        generate(model, session, [], GREEDY)


def test_end_of_generation_token(model):
    from runtime.chat_template import ChatTemplate, chat_prompt_ids
    ids = chat_prompt_ids(model, ChatTemplate.for_model(model), [{"role": "user", "content": "Hi!"}])
    gen = generate(model, model.new_session(), ids, GREEDY, max_tokens=200)
    pieces = list(gen)
    assert gen.finish_reason == "stop" and not gen.context_full
    assert model.tokenizer.is_eog(pieces[-1].token_id) and pieces[-1].text == ""
    assert not any(model.tokenizer.is_eog(p.token_id) for p in pieces[:-1])
    assert "".join(p.text for p in pieces).strip()


def test_close_stops_before_the_next_token(model, prompt_ids):
    session = model.new_session()
    gen = generate(model, session, prompt_ids, GREEDY, max_tokens=50)
    got = []
    for p in gen:
        got.append(p)
        if len(got) == 3:
            gen.close()
    assert len(got) == 3 and gen.n_generated == 3 and gen.finish_reason == "stop"
    assert len(session.tokens) == len(prompt_ids) + 2
