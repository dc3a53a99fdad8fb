"""The model families beyond llama/qwen2/gemma3, on their synthetic GGUFs (scripts/make_synthetic.py):
`chatfile run` and `chatfile inspect` on each, the MoE layer against its twin, and what the loader
reads or refuses. Agreement with llama.cpp's logits is tests/test_goldens.py.
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import runtime
from runtime import moe
from runtime.config import ARCHITECTURES, ModelConfig, ModelError, support_problem
from runtime.generate import generate
from runtime.gguf import GGUFFile
from runtime.quants import dequantize
from runtime.sampler import SamplingParams

from conftest import ROOT

SYNTHETIC = ROOT / "data" / "synthetic"
MANIFEST = json.loads((SYNTHETIC / "MANIFEST.json").read_text())
# one file per family (the architecture, and llama as Mistral and Mixtral ship it)
FAMILY_FILES = ["qwen3-Q8_0.gguf", "qwen3moe-Q8_0.gguf", "phi3-Q4_K.gguf", "gemma2-Q8_0.gguf",
                "mistral-Q4_K.gguf", "mixtral-Q8_0.gguf", "granite-Q8_0.gguf", "granitemoe-Q8_0.gguf",
                "mistral3-Q8_0.gguf"]
PROMPT = "the quick brown fox"


def chatfile(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bundler.cli", *map(str, args)], cwd=ROOT, timeout=600,
                          capture_output=True, env={**os.environ, "PYTHONPATH": str(ROOT)})


def greedy(model, prompt: str, n: int) -> tuple[str, float]:
    """In-process greedy completion and the smallest top-1/top-2 margin along the way."""
    ids = model.tokenize(prompt, add_special=True, parse_special=True)
    session, margins, out = model.new_session(256), [], []
    logits = session.eval(ids)
    for _ in range(n):
        top2 = np.sort(logits)[-2:]
        margins.append(float(top2[1] - top2[0]))
        token = int(np.argmax(logits))
        if token in model.tokenizer.eog_ids:
            break
        out.append(token)
        logits = session.eval([token])
    return model.detokenize(out), min(margins)


@pytest.mark.parametrize("name", FAMILY_FILES)
def test_chatfile_run_completes_with_each_family(name):
    path = SYNTHETIC / name
    r = chatfile("run", path, "-p", PROMPT, "-n", 8, "--temp", 0, "-c", 256)
    assert r.returncode == 0, r.stderr.decode()
    assert b"Traceback" not in r.stderr
    text, margin = greedy(runtime.load(path), PROMPT, 8)
    if margin > 0.05:      # clear choices: the command prints exactly the in-process greedy text
        assert r.stdout.decode("utf-8") == text
    else:
        assert r.stdout


def test_chatfile_inspect_names_each_family():
    from bundler.facts import inspect
    for name in FAMILY_FILES:
        facts = inspect(SYNTHETIC / name)                  # what `chatfile inspect --json` prints
        arch = MANIFEST[name]["architecture"]
        assert (facts["architecture"], facts["family"], facts["supported"]) == \
            (arch, ARCHITECTURES[arch].label, "yes")
    text = chatfile("inspect", SYNTHETIC / "phi3-Q4_K.gguf").stdout.decode()
    assert "family" in text and "Phi-4-mini" in text


def test_unsupported_model_gets_one_line_naming_what_is_missing(tmp_path):
    from test_model import _tiny_gguf
    path = _tiny_gguf(tmp_path / "phimoe.gguf", arch="phimoe")
    facts = json.loads(chatfile("inspect", path, "--json").stdout)
    assert facts["supported"].startswith("no: unsupported model architecture 'phimoe' (supported: gemma2,")
    r = chatfile("run", path, "-p", "hi")
    assert r.returncode == 2 and len(r.stderr.decode().strip().splitlines()) == 1
    assert b"unsupported model architecture 'phimoe'" in r.stderr and b"Traceback" not in r.stderr


def test_moe_layer_matches_its_twin():
    # qwen3moe: 8 experts, 2 used; plain float32 (no llama.cpp activation rounding) against the
    # numpy twin, prefill (positions grouped by expert) and decode alike
    model = runtime.load(SYNTHETIC / "qwen3moe-Q8_0.gguf")
    model.llama_rounding = False
    c = model.config
    E = model.layers[0].experts
    assert c.n_experts == 8 and c.n_experts_used == 2 and len(E.up) == 8 and E.up[3].shape == (c.dim, 64)
    x = (np.random.default_rng(7).standard_normal((5, c.dim))).astype(np.float32)
    buf = moe.Buffers(c, 5)

    def project(xs, xqs, pairs):         # as the forward pass multiplies rows alone: one row, one matvec
        model._project(xs, xqs, pairs, n_decode=int(xs.shape[0] == 1))
    ref = moe.ffn_ref(E, x, c, lambda t: dequantize(t.data, t.type, t.shape[0]))
    for rows in (slice(0, 5), slice(2, 3)):
        out = np.empty_like(x[rows])
        moe.ffn(model, project, E, np.ascontiguousarray(x[rows]), out, buf)
        np.testing.assert_allclose(out, ref[rows], rtol=1e-4, atol=1e-5)


def test_moe_without_gates_and_with_a_shared_expert_matches_its_twin():
    # Mixtral files may lack ffn_gate_exps (SiLU(up) then); granite may add a shared expert: the same
    # synthetic weights rearranged into both layouts
    model = runtime.load(SYNTHETIC / "mixtral-Q8_0.gguf")
    model.llama_rounding = False
    c = model.config
    E = model.layers[1].experts
    x = (np.random.default_rng(8).standard_normal((4, c.dim))).astype(np.float32)
    shared = (E.gate[0], E.up[1], E.down[2])

    def project(xs, xqs, pairs):
        model._project(xs, xqs, pairs, n_decode=int(xs.shape[0] == 1))
    for variant in (dataclasses.replace(E, gate=None),
                    dataclasses.replace(E, shared=shared)):
        ref = moe.ffn_ref(variant, x, c, lambda t: dequantize(t.data, t.type, t.shape[0]))
        buf = moe.Buffers(dataclasses.replace(c, shared_hidden_dim=c.hidden_dim), 4)
        for rows in (slice(0, 4), slice(1, 2)):
            out = np.empty_like(x[rows])
            moe.ffn(model, project, variant, np.ascontiguousarray(x[rows]), out, buf)
            np.testing.assert_allclose(out, ref[rows], rtol=1e-4, atol=1e-5)


def test_moe_routing_renormalises_the_chosen_weights():
    logits = np.array([[0.0, 3.0, 1.0, 2.0], [5.0, 5.0, -1.0, 0.0]], np.float32)
    chosen, weights = moe.route(logits.copy(), 2, norm=True, scale=0.0)
    assert chosen.tolist() == [[1, 3], [0, 1]]
    np.testing.assert_allclose(weights, [[np.e / (np.e + 1), 1 / (np.e + 1)], [0.5, 0.5]], rtol=1e-6)
    _, raw = moe.route(logits.copy(), 2, norm=False, scale=2.0)
    p = np.exp(logits[0] - 3) / np.exp(logits[0] - 3).sum()
    np.testing.assert_allclose(raw[0], 2 * p[[1, 3]], rtol=1e-6)


def test_fused_tensors_are_views_of_the_file():
    # phi3: attn_qkv splits into q, k, v and ffn_up into gate and up, without copying a byte
    model = runtime.load(SYNTHETIC / "phi3-Q4_K.gguf")
    c, L = model.config, model.layers[1]
    fused = model.gguf.tensors["blk.1.attn_qkv.weight"]
    assert (L.wq.n_rows, L.wk.n_rows, L.wv.n_rows) == (c.q_dim, c.kv_dim, c.kv_dim)
    assert np.shares_memory(L.wv.data, fused.data) and L.wk.offset == fused.offset + c.q_dim * fused.data.shape[1]
    up = model.gguf.tensors["blk.1.ffn_up.weight"]
    assert L.w_gate.data.base is not None and np.shares_memory(L.w_up.data, up.data)
    assert L.w_gate.n_rows == L.w_up.n_rows == c.hidden_dim and c.ffn_fused


def _config(name, **meta_changes):
    g = GGUFFile(SYNTHETIC / name)
    g.metadata.update(meta_changes)
    return ModelConfig.from_gguf(g), g


def test_config_reads_each_familys_keys():
    c, _ = _config("qwen3-Q8_0.gguf")
    assert (c.head_dim, c.q_dim, c.dim, c.qk_norm, c.rope_neox) == (128, 512, 256, True, True)
    c, _ = _config("phi3-Q4_K.gguf")
    assert (c.rope_dim, c.head_dim, c.rope_factors, c.rope_ctx_orig) == (48, 64, "long_short", 4096)
    assert c.sliding_window == 0 and not any(c.local_layers)        # llama.cpp disables Phi's SWA
    assert c.rope_global.attn_factor == pytest.approx(1.19) and c.q_scale == pytest.approx(1 / 8)
    c, _ = _config("gemma2-Q8_0.gguf")
    assert (c.sliding_window, c.local_layers, c.attn_softcap, c.final_softcap) == (32, (True, False), 2.0, 3.0)
    assert c.tied_output and c.rope_local.base == c.rope_global.base
    c, _ = _config("gemma2-Q4_K.gguf")                               # no keys: Gemma 2's defaults
    assert (c.sliding_window, c.attn_softcap, c.final_softcap) == (4096, 50.0, 30.0)
    c, _ = _config("gemma3-Q8_0.gguf")                               # the keys the 270M model lacks
    assert (c.local_layers, c.rope_local.base, c.rope_global.base, c.final_softcap) == \
        ((True, False), 5000.0, 1e6, 3.0)
    c, _ = _config("mistral-Q4_K.gguf")
    assert c.sliding_window == 0 and not any(c.local_layers)        # llama ignores attention.sliding_window
    c, _ = _config("granite-Q8_0.gguf")
    assert (c.embed_scale, c.residual_scale, c.logit_scale, c.kq_scale) == (6.0, 0.5, 0.25, pytest.approx(0.1))
    c, _ = _config("granitemoe-Q8_0.gguf")
    assert (c.n_experts, c.n_experts_used, c.hidden_dim, c.shared_hidden_dim, c.rope_layers) == (4, 2, 64, 128, True)
    c, _ = _config("mistral3-Q8_0.gguf")
    assert (c.attn_temp_scale, c.attn_temp_floor) == (pytest.approx(0.1), 32)
    assert c.rope_global.ext_factor == 1.0 and c.rope_global.freq_scale == 1 / 8
    c, _ = _config("qwen3-yarn-Q4_K.gguf")
    assert c.rope_global.ext_factor == 1.0 and c.rope_global.corr_dims == (0.0, 11.0)
    c, _ = _config("mixtral-Q8_0.gguf")
    assert (c.n_experts, c.n_experts_used, c.hidden_dim) == (4, 2, 128)


def test_config_refuses_what_llama_cpp_refuses():
    with pytest.raises(ModelError, match="rope dimension count 32 differs from the head size 64"):
        _config("mistral-Q4_K.gguf", **{"llama.rope.dimension_count": 32})
    with pytest.raises(ModelError, match="qwen3moe.expert_count and qwen3moe.expert_used_count"):
        _config("qwen3moe-Q8_0.gguf", **{"qwen3moe.expert_used_count": 0})
    with pytest.raises(ModelError, match="RoPE scaling 'dynamic' is not supported"):
        _config("qwen3-Q8_0.gguf", **{"qwen3.rope.scaling.type": "dynamic"})
    with pytest.raises(ModelError, match="metadata key 'granite.logit_scale' is missing"):
        g = GGUFFile(SYNTHETIC / "granite-Q8_0.gguf")
        del g.metadata["granite.logit_scale"]
        ModelConfig.from_gguf(g)
    with pytest.raises(ModelError, match="runs qwen3 as a dense model only"):
        _config("qwen3-Q8_0.gguf", **{"qwen3.expert_count": 4})


def test_per_layer_head_counts_as_llama_cpp_reads_them():
    # head_count, head_count_kv and feed_forward_length may be one value per layer (get_key_or_arr)
    same, _ = _config("qwen3-Q8_0.gguf", **{"qwen3.attention.head_count_kv": np.array([2, 2], np.int32),
                                            "qwen3.feed_forward_length": [256, 256]})
    plain, _ = _config("qwen3-Q8_0.gguf")
    assert (same.n_kv_heads, same.hidden_dim) == (plain.n_kv_heads, plain.hidden_dim) == (2, 256)
    with pytest.raises(ModelError, match="'qwen3.attention.head_count' differs between layers"):
        _config("qwen3-Q8_0.gguf", **{"qwen3.attention.head_count": np.array([4, 8], np.int32)})
    with pytest.raises(ModelError, match="has 3 entries, expected one per layer"):
        _config("qwen3-Q8_0.gguf", **{"qwen3.feed_forward_length": [256, 256, 256]})
    with pytest.raises(ModelError, match="'qwen3.context_length' has the invalid value"):
        _config("qwen3-Q8_0.gguf", **{"qwen3.context_length": [512, 512]})


def test_support_problem_names_type_and_tokenizer():
    _, g = _config("qwen3-Q8_0.gguf")
    assert support_problem(g) is None
    g.metadata["tokenizer.ggml.pre"] = "no-such-pre"
    assert support_problem(g) == "unknown pre-tokenizer tokenizer.ggml.pre='no-such-pre'"
    g.metadata["tokenizer.ggml.model"] = "t5"
    assert "tokenizer.ggml.model='t5' is not supported" in support_problem(g)
    t = g.tensors["blk.0.attn_q.weight"]
    g.tensors["blk.0.attn_q.weight"] = dataclasses.replace(t, type=39)      # MXFP4
    assert support_problem(g).startswith("tensor 'blk.0.attn_q.weight' has type MXFP4")
