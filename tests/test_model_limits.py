"""Model files that ask for what they cannot have: a vocabulary that does not match the embedding table,
a KV cache larger than the machine's memory, and (randomized) hyperparameters and vocabularies of any
shape. Each is refused with one line, or runs.

Randomized cases: CHATFILE_FUZZ_EXAMPLES (default 100) per class, derandomized; the long run is
`CHATFILE_FUZZ_EXAMPLES=3000 .venv/bin/python -m pytest tests/test_model_limits.py -q`.
"""
from __future__ import annotations

import math
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import runtime
from fuzz_helpers import fuzz_examples, fuzz_settings
from gguf_helpers import gguf_bytes, metadata_item, rebuild
from runtime.config import ModelError
from runtime.ggml import GGMLType, QUANT_SIZES, ValueType
from runtime.gguf import GGUFError, GGUFFile
from runtime.memory import available_bytes, fit_context
from runtime.tokenizer import Tokenizer, TokenizerError
from server_helpers import run_cli

ROOT = Path(__file__).resolve().parent.parent
SYNTHETIC = ROOT / "data" / "synthetic" / "llama-Q8_0.gguf"
FUZZ_EXAMPLES = fuzz_examples(100)
FUZZ = fuzz_settings(FUZZ_EXAMPLES)
V = ValueType


def one_line(r: subprocess.CompletedProcess) -> str:
    lines = r.stderr.decode().strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in lines[0], (r.returncode, lines)
    return lines[0]


# ---- the vocabulary against the embedding table ----------------------------------------------------

@pytest.mark.parametrize("n_tokens", [290, 310])
def test_vocabulary_that_does_not_match_the_embedding_is_refused(tmp_path, n_tokens):
    """290 tokens for 300 rows (sampling could pick an id with no token), or 310 (tokenizing could give
    an id past the rows): one line at load, exit 2."""
    f = GGUFFile(SYNTHETIC)
    tokens = f.metadata["tokenizer.ggml.tokens"]
    types = f.metadata["tokenizer.ggml.token_type"]
    tokens = tokens[:n_tokens] + [f"<extra_{i}>" for i in range(n_tokens - len(tokens))]
    types = np.concatenate([types, np.ones(max(n_tokens - len(types), 0), types.dtype)])[:n_tokens]
    path = tmp_path / "vocab.gguf"
    path.write_bytes(rebuild(f, {"tokenizer.ggml.tokens": metadata_item(tokens, V.ARRAY),
                                 "tokenizer.ggml.token_type": metadata_item(types, V.ARRAY)}))
    line = one_line(run_cli("-m", path, "-p", "Hi", "-n", "4"))
    assert f"the vocabulary has {n_tokens} tokens but token_embd.weight has 300 rows" in line, line


# ---- the KV cache against the memory available -----------------------------------------------------

def thin_model(path: Path, n_layers: int, n_heads: int, context_length: int) -> Path:
    """A llama model of dim 32 with n_layers layers of n_heads heads of 64 (Q4_0, all weights zero):
    its KV cache takes 256 * n_layers * n_heads bytes a position while the file holds ~4.6 kB per head."""
    f = GGUFFile(SYNTHETIC)
    meta = f.metadata
    dim, head_dim, vocab = 32, 64, len(meta["tokenizer.ggml.tokens"])
    q = n_heads * head_dim
    kvs = [("general.architecture", V.STRING, "llama"), ("general.name", V.STRING, "thin"),
           ("llama.context_length", V.UINT32, context_length), ("llama.embedding_length", V.UINT32, dim),
           ("llama.block_count", V.UINT32, n_layers), ("llama.feed_forward_length", V.UINT32, dim),
           ("llama.attention.head_count", V.UINT32, n_heads), ("llama.attention.head_count_kv", V.UINT32, n_heads),
           ("llama.attention.key_length", V.UINT32, head_dim), ("llama.attention.value_length", V.UINT32, head_dim),
           ("llama.attention.layer_norm_rms_epsilon", V.FLOAT32, 1e-5)]
    kvs += [(k, *metadata_item(v, f.value_types[k])) for k, v in meta.items() if k.startswith("tokenizer.ggml.")]

    def tensor(name, dims, ttype=GGMLType.Q4_0):
        block, size = QUANT_SIZES[ttype]
        return name, dims, ttype, bytes(math.prod(dims[1:]) * dims[0] // block * size)

    tensors = [tensor("token_embd.weight", [dim, vocab]), tensor("output_norm.weight", [dim], GGMLType.F32)]
    for i in range(n_layers):
        p = f"blk.{i}."
        tensors += [tensor(p + "attn_norm.weight", [dim], GGMLType.F32), tensor(p + "attn_q.weight", [dim, q]),
                    tensor(p + "attn_k.weight", [dim, q]), tensor(p + "attn_v.weight", [dim, q]),
                    tensor(p + "attn_output.weight", [q, dim]), tensor(p + "ffn_norm.weight", [dim], GGMLType.F32),
                    tensor(p + "ffn_gate.weight", [dim, dim]), tensor(p + "ffn_up.weight", [dim, dim]),
                    tensor(p + "ffn_down.weight", [dim, dim])]
    path.write_bytes(gguf_bytes(kvs, tensors))
    return path


@pytest.mark.slow
def test_kv_cache_larger_than_memory(tmp_path):
    """A ~50 MB file whose default 8192-position KV cache would not fit in this machine's available
    memory: the default context is lowered with one line (the terminal chat then starts and ends on an
    empty input: generating would fill ~80% of the memory); an explicit -c that does not fit, and -c 0
    with a trained context of 2^31 positions, are one error line."""
    available = available_bytes()
    if available is None:
        pytest.skip("this platform does not say how much memory is available")
    n_layers = 8
    n_heads = math.ceil(available / (8192 * 256 * n_layers)) + 8            # 8192 positions: > available
    model = thin_model(tmp_path / "thin.gguf", n_layers, n_heads, context_length=2**31)
    per_position = 256 * n_layers * n_heads
    assert 8192 * per_position > available and model.stat().st_size < 200 << 20

    r = run_cli("-m", model, "--chat")
    lines = r.stderr.decode().strip().splitlines()
    assert r.returncode == 0, r.stderr.decode()
    assert len([line for line in lines if "KV cache" in line]) == 1 and "Traceback" not in r.stderr.decode()
    assert "the KV cache for 8192 positions would take" in lines[0], lines
    lowered = int(lines[0].split("using a context of ")[1].split()[0])
    assert 256 <= lowered < 8192 and lowered * per_position <= available

    assert "give a smaller -c" in one_line(run_cli("-m", model, "-p", "Hi", "-c", 8192))
    assert "give a smaller -c" in one_line(run_cli("-m", model, "-p", "Hi", "-c", 0))


def test_fit_context_arithmetic():
    mib = 1 << 20
    assert fit_context(8192, 1, 1024, None) == 8192                        # memory unknown: as asked
    assert fit_context(8192, 1, 1024, 100 * mib) == 8192                   # 8 MiB of 80 allowed
    assert fit_context(8192, 4, mib, 10_000 * mib) == 1792                 # 0.8 * 10000 / 4 = 2000 -> 1792
    assert fit_context(8192, 1, mib, 100 * mib) == 0                       # 80 positions: not worth it


# ---- random shapes: hyperparameters that may or may not agree with the tensors ----------------------

SHAPE_KEYS = ["llama.block_count", "llama.embedding_length", "llama.feed_forward_length",
              "llama.attention.head_count", "llama.attention.head_count_kv", "llama.attention.key_length",
              "llama.attention.value_length", "llama.rope.dimension_count", "llama.context_length",
              "llama.vocab_size", "llama.expert_count", "llama.expert_used_count",
              "llama.attention.sliding_window", "llama.rope.scaling.original_context_length"]
INTERESTING = [0, 1, 2, 3, 4, 8, 31, 32, 63, 64, 128, 255, 256, 300, 512, 1 << 16, 1 << 31, (1 << 32) - 1]


@FUZZ
@given(st.dictionaries(st.sampled_from(SHAPE_KEYS), st.sampled_from(INTERESTING), min_size=1, max_size=4))
def test_random_hyperparameters_load_or_refuse(tmp_path_factory, overrides):
    f = GGUFFile(SYNTHETIC)
    path = tmp_path_factory.mktemp("shape") / "m.gguf"
    path.write_bytes(rebuild(f, {k: (V.UINT32, v) for k, v in overrides.items()}))
    try:
        model = runtime.load(path)
    except (GGUFError, ModelError, TokenizerError) as e:
        assert "\n" not in str(e)
        return
    n_ctx = min(model.config.context_length, 64)
    session = model.new_session(n_ctx)
    logits = session.eval(model.tokenize("Hi there", add_special=False)[: n_ctx - 1] or [0])
    assert logits.shape == (model.config.vocab_size,)


# ---- random vocabularies ---------------------------------------------------------------------------

_TOKEN = st.one_of(st.sampled_from(["<s>", "</s>", "<unk>", "<|im_end|>", "\n", " ", "  ", "▁", "▁a", "a", "Ġ",
                                    "<0x0A>", "<0xFF>", "[PAD]", "<mask>", "ab", "b c"]),
                   st.text(min_size=0, max_size=6))
_IDS = st.one_of(st.none(), st.integers(-3, 40), st.sampled_from([2**31 - 1, 2**32 - 1]))


@st.composite
def vocabularies(draw):
    model = draw(st.sampled_from(["gpt2", "llama", "bert", ""]))
    tokens = draw(st.lists(_TOKEN, min_size=0, max_size=40))
    meta = {"tokenizer.ggml.model": model, "tokenizer.ggml.tokens": tokens}
    if draw(st.booleans()):
        meta["tokenizer.ggml.token_type"] = np.array(draw(st.lists(st.integers(-2, 8), min_size=len(tokens),
                                                                   max_size=len(tokens) + 2)), np.int32)
    if draw(st.booleans()):
        meta["tokenizer.ggml.scores"] = np.array(draw(st.lists(
            st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=len(tokens), max_size=len(tokens))),
            np.float32)
    if model == "gpt2" or draw(st.booleans()):
        meta["tokenizer.ggml.merges"] = draw(st.lists(st.sampled_from(["a b", "Ġ a", "ab c", "", " ", "a", "b  c",
                                                                      "▁ a"]), max_size=10))
    meta["tokenizer.ggml.pre"] = draw(st.sampled_from(["default", "llama-bpe", "qwen2", "smollm", "gpt-2", "tekken",
                                                       "nonsense", None]))
    for name in ("bos", "eos", "unk", "eot", "pad"):
        value = draw(_IDS)
        if value is not None:
            meta[f"tokenizer.ggml.{name}_token_id"] = value
    for flag in ("add_bos_token", "add_eos_token", "add_space_prefix"):
        if draw(st.booleans()):
            meta[f"tokenizer.ggml.{flag}"] = draw(st.booleans())
    meta["general.name"] = draw(st.sampled_from(["", "phi-3", "x"]))
    return {k: v for k, v in meta.items() if v is not None}


@FUZZ
@given(vocabularies(), st.text(max_size=40), st.lists(st.integers(0, 60), max_size=12))
def test_random_vocabularies_load_or_refuse(meta, text, ids):
    """Any tokenizer metadata: TokenizerError, or a tokenizer that tokenizes any text and detokenizes
    any id of its vocabulary without raising."""
    try:
        tok = Tokenizer.from_metadata(meta)
    except TokenizerError as e:
        assert "\n" not in str(e)
        return
    for add_special in (True, False):
        out = tok.tokenize(text, add_special=add_special)
        assert all(0 <= t < tok.vocab_size for t in out)
    tok.detokenize([i % tok.vocab_size for i in ids])
