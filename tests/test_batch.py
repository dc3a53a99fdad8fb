"""Model.forward over batches of several sequences: each row's numbers are those it gets alone, a
prompt cut into runs gives the numbers of the whole prompt, and the context shift moves the cache as
llama.cpp's does. On the committed synthetic models (no network), with llama.cpp's roundings on."""
from __future__ import annotations

import numpy as np
import pytest

import runtime
from runtime.generate import shift_amounts
from runtime.model import Buffers, KVCache, prompt_rows

from conftest import ROOT

SYNTHETIC = ROOT / "data" / "synthetic"
RNG = np.random.default_rng(16)


def ids_(n, vocab):
    return [int(i) for i in RNG.integers(1, vocab, n)]


def alone(model, prompt, follow):
    """Logits of a fresh session: after the whole prompt, then after each token of `follow` decoded."""
    s = model.new_session(64)
    out = [s.eval(prompt)]
    for t in follow:
        out.append(s.eval([t]))
    return out


@pytest.mark.parametrize("name", ["llama-Q4_1.gguf", "llama-Q8_0.gguf", "qwen2-Q8_0.gguf"])
def test_batched_rows_equal_each_sequence_alone(name):
    model = runtime.load(SYNTHETIC / name)
    vocab = model.config.vocab_size
    prompts = [ids_(n, vocab) for n in (13, 7, 22)]
    follows = [ids_(4, vocab) for _ in prompts]
    expect = [alone(model, p, f) for p, f in zip(prompts, follows)]

    kv = KVCache(model, 3, 64)
    buf = Buffers(model.config, rows=16, heads=4)
    got = [[] for _ in prompts]
    fed = [0, 0, 0]                       # prompt tokens of each sequence in the cache
    step = [0, 0, 0]                      # follow tokens decoded
    # each step: one decode row per sequence that has its prompt in, then a run of at most 8 prompt
    # tokens (a multiple of 4) of the first sequence still reading its prompt
    while any(step[i] < len(follows[i]) for i in range(3)):
        ids, seq, pos, rows = [], [], [], []
        decoding = [i for i in range(3) if fed[i] == len(prompts[i]) and step[i] < len(follows[i])]
        for i in decoding:
            ids.append(follows[i][step[i]])
            seq.append(i)
            pos.append(fed[i] + step[i])
            rows.append(len(ids) - 1)
        reading = [i for i in range(3) if fed[i] < len(prompts[i])]
        done_reading = None
        if reading:
            i = reading[0]
            run = prompts[i][fed[i]:fed[i] + 8]
            ids += run
            seq += [i] * len(run)
            pos += range(fed[i], fed[i] + len(run))
            if fed[i] + len(run) == len(prompts[i]):
                rows.append(len(ids) - 1)
                done_reading = i
            fed[i] += len(run)
        logits = model.forward(kv, buf, np.array(ids, np.int64), np.array(seq, np.int64),
                               np.array(pos, np.int64), len(decoding), np.array(rows, np.int64))
        for r, i in enumerate(decoding):
            got[i].append(logits[r].copy())
            step[i] += 1
        if done_reading is not None:
            got[done_reading].append(logits[len(decoding)].copy())
    for i in range(3):
        assert len(got[i]) == len(expect[i])
        for a, b in zip(got[i], expect[i]):
            assert np.array_equal(a, b), f"sequence {i}"


@pytest.mark.parametrize("name", ["llama-Q4_K.gguf", "llama-Q4_1.gguf", "llama-Q8_0.gguf"])
def test_several_prompts_in_one_pass_equal_each_alone(name):
    # the server's layout (model.prompt_rows): the last len % 4 rows of every prompt but the last as
    # decode rows, then one GEMM over the whole 4-row tiles of every prompt and the last prompt's last
    # rows (Q4_K sums tile rows as llama.cpp's gemm and the others as its gemv)
    model = runtime.load(SYNTHETIC / name)
    if not model.gemm_tails_are_rows():
        pytest.skip("the server reads one prompt per pass here (no integer GEMM for these types)")
    vocab = model.config.vocab_size
    prompts = [ids_(n, vocab) for n in (13, 7, 22, 8, 6)]
    follows = [ids_(3, vocab) for _ in prompts]
    expect = [alone(model, p, f) for p, f in zip(prompts, follows)]
    kv = KVCache(model, len(prompts), 64)
    buf = Buffers(model.config, rows=64, heads=len(prompts))
    rows, n_decode = prompt_rows([len(p) for p in prompts])
    ids = [prompts[i][j] for i, j in rows]
    last = [rows.index((i, len(p) - 1)) for i, p in enumerate(prompts)]
    logits = model.forward(kv, buf, np.array(ids, np.int64), np.array([i for i, _ in rows], np.int64),
                           np.array([j for _, j in rows], np.int64), n_decode, np.array(last, np.int64))
    got = [[logits[r].copy()] for r in range(len(prompts))]
    seqs = np.arange(len(prompts), dtype=np.int64)
    for step in range(3):                 # then all decode together
        logits = model.forward(kv, buf, np.array([f[step] for f in follows], np.int64), seqs,
                               np.array([len(p) + step for p in prompts], np.int64), len(prompts), seqs)
        for i in range(len(prompts)):
            got[i].append(logits[i].copy())
    for i in range(len(prompts)):
        for k, (a, b) in enumerate(zip(got[i], expect[i])):
            assert np.array_equal(a, b), f"sequence {i}, step {k}"


def test_context_shift_keeps_the_kept_and_moves_the_rest():
    model = runtime.load(SYNTHETIC / "llama-Q8_0.gguf")
    model.llama_rounding = False          # plain float32: a re-rotated key differs by rounding only
    vocab = model.config.vocab_size
    ids = ids_(20, vocab)
    s = model.new_session(20)
    s.eval(ids)
    before_k, before_v = s.kv.k[:, 0, :, :20].copy(), s.kv.v[:, 0, :, :20].copy()
    n_keep, n_discard = shift_amounts(20, 20, 3)
    assert (n_keep, n_discard) == (3, 8)  # llama-server: keep n_keep, discard half of the other 17
    s.shift(n_keep, n_discard)
    assert s.tokens == ids[:3] + ids[11:]
    assert np.array_equal(s.kv.k[:, 0, :, :3], before_k[..., :3, :])           # kept as they were
    assert np.array_equal(s.kv.v[:, 0, :, 3:12], before_v[..., 11:20, :])          # values just move
    # a moved key is the key its token would have at its new position: exactly so in layer 0, whose
    # keys depend on the token and its position only (to the fp16 rounding of the re-rotation)
    fresh = model.new_session(20)
    fresh.eval(s.tokens)
    k_moved = s.kv.k[0, 0, :, :12].view(np.float16).astype(np.float32)
    k_fresh = fresh.kv.k[0, 0, :, :12].view(np.float16).astype(np.float32)
    np.testing.assert_allclose(k_moved, k_fresh, rtol=0, atol=2e-3)
    s.eval(ids_(1, vocab))                # the next token goes after the moved ones
    assert len(s.tokens) == 13
    with pytest.raises(ValueError):
        s.shift(5, 100)


def test_kv_cache_holds_fp16():
    model = runtime.load(SYNTHETIC / "llama-Q8_0.gguf")
    c = model.config
    kv = KVCache(model, 2, 32)
    assert kv.k.dtype == np.uint16 and kv.k.shape == (c.n_layers, 2, c.n_kv_heads, 32, c.head_dim)
    # half of a float32 cache: 2 bytes per value, K and V, every layer
    assert KVCache.bytes_per_position(c) == 2 * c.n_layers * c.kv_dim * 2
