"""Write the tiny random-weight GGUF models in data/synthetic/ that the model tests run on.

Run (it needs numpy, gguf and llama-cpp-python, which builds the K-quants; the oracle venv has all three):

    /work/llcpp/bin/python scripts/make_synthetic.py            # writes data/synthetic/*.gguf
    /work/llcpp/bin/python scripts/make_synthetic.py --check    # then loads each in llama.cpp

Deterministic (fixed seeds, one quantization thread): re-running rewrites identical files, and
MANIFEST.json records each file's sha256 so a change shows up in review.

What is written (one F32 model per spec, then llama.cpp's quantizer with `pure` set, so every 2-D
and 3-D weight takes the target type and the 1-D norms, biases and RoPE factors stay F32; llama.cpp
never quantizes ffn_gate_inp):
    llama-{TYPE}.gguf          architecture llama, tied output head (no output.weight, like SmolLM2),
                               one file per type: F32 F16 BF16 Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q2_K .. Q6_K
                               IQ4_NL IQ4_XS
    llama-untied-Q4_K.gguf     architecture llama with a separate output.weight
    qwen2-{TYPE}.gguf          architecture qwen2 (1 layer): attn_q/k/v biases, NEOX RoPE, own
                               output.weight (F32, Q8_0)
    qwen3-Q8_0.gguf            qwen3: per-head q/k RMS norms, 4 heads of 128 (key_length 128, so q is
                               512 wide on a 256 residual), no biases, Qwen 3's template
    qwen3-yarn-Q4_K.gguf       the same shapes with YaRN RoPE scaling (factor 4 over 64 positions)
    qwen3moe-Q8_0.gguf         qwen3moe: 8 routed experts of width 64, 2 used per token
    phi3-Q4_K.gguf             phi3 as Phi-4-mini ships: fused attn_qkv, fused gate+up ffn_up of twice
                               the width, RoPE on 48 of 64 dimensions, LongRoPE factors with an
                               original context of 4096 (the short factors apply), sliding_window
                               set (llama.cpp ignores it for phi3), Phi-3.5's template and its
                               control tokens (<s>, </s>, <unk>, <|end|>, <|user|>, ...)
    phi3-long-Q8_0.gguf        the same with an original context of 128: at llama.cpp's n_ctx 2048
                               the long factors and the attention factor apply
    gemma2-Q8_0.gguf           gemma2: sqrt(dim)-scaled embeddings, post norms, GELU, q pre-scaled,
                               sliding window 32 on even layers, attention and final logit
                               soft-capping (2.0 and 3.0, small enough to bite), Gemma 2's template
    gemma2-Q4_K.gguf           gemma2 without those keys: llama.cpp's defaults (window 4096, caps 50, 30)
    gemma3-Q8_0.gguf           gemma3 with the keys its loader reads beyond the real 270M model's:
                               sliding_window_pattern 2 (the window on even layers), rope.freq_base_swa,
                               final_logit_softcapping; 1 KV head
    mistral-Q4_K.gguf          llama as Mistral ships it: attention.sliding_window 16 (which llama.cpp
                               ignores for llama), rope base 1e6, 1 KV head, own output.weight
    mixtral-Q8_0.gguf          llama with 4 routed experts, 2 used (Mixtral's layout)
    granite-Q8_0.gguf          granite: embedding, residual, attention and logit multipliers
    granitemoe-Q8_0.gguf       granitemoe: the same multipliers, 4 routed experts (2 used) and a
                               shared expert of width 128
    mistral3-Q8_0.gguf         mistral3 as Ministral 3: YaRN (factor 8 over 32 positions, log
                               multiplier 1) and Llama 4 attention temperature 0.1
Shapes: 2 layers (qwen2: 1), dim 256 (K-quant rows come in blocks of 256), 4 heads of 64 unless
said, 2 KV heads, FFN 256 (512 would take the set past 30 MB), vocabulary 300: GPT-2 byte-level BPE
(256 byte tokens, 3 specials, 41 merges learned from a fixed text), chat template ChatML unless a
family's own is named (data/templates/). Weights are normal * 1/sqrt(fan_in) so activations stay
O(1) and logits spread (std ~1.5).
"""
from __future__ import annotations

import argparse
import collections
import ctypes
import hashlib
import json
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

OUT_DIR = Path(__file__).resolve().parent.parent / "data" / "synthetic"
TEMPLATES = Path(__file__).resolve().parent.parent / "data" / "templates"

N_LAYERS = 2
DIM = 256
N_HEADS = 4
N_KV_HEADS = 2
HEAD_DIM = DIM // N_HEADS
FFN = 256
CONTEXT = 512
RMS_EPS = 1e-5
ROPE_BASE = 10000.0
N_MERGES = 41
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]   # ids 0, 1, 2
BOS_ID, EOS_ID = 0, 2

# quantization targets: output name -> llama_ftype (pure: this type for every 2-D tensor)
FTYPES = {
    "IQ4_NL": "LLAMA_FTYPE_MOSTLY_IQ4_NL", "IQ4_XS": "LLAMA_FTYPE_MOSTLY_IQ4_XS",
    "F32": "LLAMA_FTYPE_ALL_F32", "F16": "LLAMA_FTYPE_MOSTLY_F16", "BF16": "LLAMA_FTYPE_MOSTLY_BF16",
    "Q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0", "Q4_1": "LLAMA_FTYPE_MOSTLY_Q4_1",
    "Q5_0": "LLAMA_FTYPE_MOSTLY_Q5_0", "Q5_1": "LLAMA_FTYPE_MOSTLY_Q5_1", "Q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0",
    "Q2_K": "LLAMA_FTYPE_MOSTLY_Q2_K", "Q3_K": "LLAMA_FTYPE_MOSTLY_Q3_K_S",
    "Q4_K": "LLAMA_FTYPE_MOSTLY_Q4_K_S", "Q5_K": "LLAMA_FTYPE_MOSTLY_Q5_K_S", "Q6_K": "LLAMA_FTYPE_MOSTLY_Q6_K",
}
FTYPES_LLAMA = ["F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0",
                "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL", "IQ4_XS"]


@dataclass(frozen=True)
class Spec:
    """One synthetic model: its architecture, the quirks its tensors and metadata carry, its types."""
    prefix: str
    arch: str
    types: tuple
    seed: int
    n_layers: int = N_LAYERS
    untied: bool = False             # a separate output.weight
    head_dim: int = HEAD_DIM         # attention.key_length/value_length written when not DIM // N_HEADS
    n_kv_heads: int = N_KV_HEADS
    ffn: int = FFN
    rope_dim: int = 0                # rope.dimension_count (0: the head)
    qkv_bias: bool = False           # attn_q/k/v.bias (qwen2)
    qk_norm: bool = False            # attn_q_norm / attn_k_norm (qwen3)
    fused_qkv: bool = False          # attn_qkv (phi3)
    fused_ffn: bool = False          # ffn_up of 2 * ffn, no ffn_gate (phi3)
    post_norms: bool = False         # post_attention_norm / post_ffw_norm (gemma2)
    rope_factors: bool = False       # rope_factors_long / rope_factors_short (phi3 LongRoPE)
    n_experts: int = 0               # routed experts (ffn_gate_inp, ffn_*_exps)
    n_experts_used: int = 0
    shared_ffn: int = 0              # a shared expert of this width (ffn_*_shexp, granite MoE)
    context: int = CONTEXT
    template: str = ""               # a data/templates/ file; "" = ChatML
    extra_specials: tuple = ()       # control tokens appended to the vocabulary
    keys: dict = field(default_factory=dict)   # GGUFWriter.add_<name>(value) for extra metadata


# llama.cpp sets Phi-3's strip flags on these by name when general.name says phi3, and fails to load
# a vocabulary without them; real Phi-3 vocabularies have them all
PHI3_SPECIALS = ("<unk>", "<s>", "</s>", "<|end|>", "<|user|>", "<|assistant|>", "<|system|>")

MODELS = [
    Spec("llama", "llama", (*FTYPES_LLAMA,), 1),
    Spec("llama-untied", "llama", ("Q4_K",), 2, untied=True),
    Spec("qwen2", "qwen2", ("F32", "Q8_0"), 3, n_layers=1, untied=True, qkv_bias=True),
    Spec("qwen3", "qwen3", ("Q8_0",), 4, head_dim=128, qk_norm=True, template="Qwen-Qwen3-0.6B.jinja",
         keys={"rope_freq_base": 1e6}),
    Spec("qwen3-yarn", "qwen3", ("Q4_K",), 5, head_dim=128, qk_norm=True, context=256,
         keys={"rope_freq_base": 1e6, "rope_scaling_type": "yarn", "rope_scaling_factor": 4.0,
               "rope_scaling_orig_ctx_len": 64}),
    Spec("qwen3moe", "qwen3moe", ("Q8_0",), 6, head_dim=128, qk_norm=True, ffn=64, n_experts=8,
         n_experts_used=2, template="Qwen-Qwen3-0.6B.jinja", keys={"expert_feed_forward_length": 64}),
    Spec("phi3", "phi3", ("Q4_K",), 7, fused_qkv=True, fused_ffn=True, rope_dim=48, rope_factors=True,
         context=131072, template="microsoft-Phi-3.5-mini-instruct.jinja", extra_specials=PHI3_SPECIALS,
         keys={"rope_scaling_orig_ctx_len": 4096, "rope_scaling_attn_factors": 1.19, "sliding_window": 64}),
    Spec("phi3-long", "phi3", ("Q8_0",), 8, fused_qkv=True, fused_ffn=True, rope_dim=48, rope_factors=True,
         template="microsoft-Phi-3.5-mini-instruct.jinja", extra_specials=PHI3_SPECIALS,
         keys={"rope_scaling_orig_ctx_len": 128, "rope_scaling_attn_factors": 1.134, "sliding_window": 64}),
    Spec("gemma2", "gemma2", ("Q8_0",), 9, head_dim=128, post_norms=True, template="google-gemma-2-2b-it.jinja",
         keys={"sliding_window": 32, "attn_logit_softcapping": 2.0, "final_logit_softcapping": 3.0}),
    Spec("gemma2", "gemma2", ("Q4_K",), 10, head_dim=128, post_norms=True,
         template="google-gemma-2-2b-it.jinja"),
    Spec("gemma3", "gemma3", ("Q8_0",), 15, head_dim=128, qk_norm=True, post_norms=True, n_kv_heads=1,
         keys={"sliding_window": 16, "sliding_window_pattern": 2, "rope_freq_base": 1e6,
               "rope_freq_base_swa": 5000.0, "final_logit_softcapping": 3.0}),
    Spec("mistral", "llama", ("Q4_K",), 11, untied=True, n_kv_heads=1,
         template="mistralai-Mistral-Nemo-Instruct-2407.jinja",
         keys={"rope_freq_base": 1e6, "sliding_window": 16}),
    Spec("mixtral", "llama", ("Q8_0",), 12, ffn=128, n_experts=4, n_experts_used=2,
         template="mistralai-Mistral-Nemo-Instruct-2407.jinja"),
    Spec("granite", "granite", ("Q8_0",), 13, template="ibm-granite-granite-3.3-2B-Instruct.jinja",
         keys={"logit_scale": 4.0, "residual_scale": 0.5, "embedding_scale": 6.0, "attention_scale": 0.1}),
    Spec("granitemoe", "granitemoe", ("Q8_0",), 16, ffn=64, n_experts=4, n_experts_used=2, shared_ffn=128,
         template="ibm-granite-granite-3.3-2B-Instruct.jinja",
         keys={"logit_scale": 3.0, "residual_scale": 0.7, "embedding_scale": 8.0, "attention_scale": 0.125,
               "expert_shared_feed_forward_length": 128}),
    Spec("mistral3", "mistral3", ("Q8_0",), 14, untied=True,
         template="mistralai-Ministral-3-14B-Reasoning-2512.jinja",
         keys={"rope_freq_base": 1e6, "rope_scaling_type": "yarn", "rope_scaling_factor": 8.0,
               "rope_scaling_orig_ctx_len": 32, "rope_scaling_yarn_log_mul": 1.0,
               "attn_temperature_scale": 0.1}),
]

CORPUS = ("the quick brown fox jumps over the lazy dog. hello world, this is a tiny model that "
          "talks about the weather, the sea and the stars. there is no meaning in these weights; "
          "they only have to be the same in every engine that reads them.")

CHAT_TEMPLATE = ("{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}"
                 "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable characters (openai/gpt-2 encoder.py)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


def learn_merges(text: str, n_merges: int) -> list[tuple[str, str]]:
    """A few BPE merges from the corpus, most frequent pair first, ties broken by the pair itself."""
    b2u = byte_to_unicode()
    words = [[b2u[b] for b in ((" " if i else "") + w).encode()] for i, w in enumerate(text.split(" "))]
    merges = []
    for _ in range(n_merges):
        pairs = collections.Counter()
        for w in words:
            pairs.update(zip(w, w[1:]))
        (a, b), _count = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]))
        merges.append((a, b))
        for w in words:
            i = 0
            while i < len(w) - 1:
                if w[i] == a and w[i + 1] == b:
                    w[i:i + 2] = [a + b]
                i += 1
    return merges


def vocabulary(extra_specials=()) -> tuple[list[str], list[int], list[str]]:
    """tokens, token types, merges ("a b")."""
    b2u = byte_to_unicode()
    merges = learn_merges(CORPUS, N_MERGES)
    tokens = SPECIALS + [b2u[b] for b in range(256)] + [a + b for a, b in merges] + list(extra_specials)
    types = ([3] * len(SPECIALS) + [1] * (len(tokens) - len(SPECIALS) - len(extra_specials))  # CONTROL, NORMAL
             + [3] * len(extra_specials))
    assert len(set(tokens)) == len(tokens)
    return tokens, types, [f"{a} {b}" for a, b in merges]


def weights(spec: Spec, vocab_size: int) -> dict[str, np.ndarray]:
    """name -> float32 array in numpy order ([ne1, ne0]: rows first). The draws keep the order of the
    first specs (llama, qwen2), so their files stay byte for byte what they were."""
    rng = np.random.default_rng(spec.seed)

    def dense(*shape):               # [..., n_out, n_in], std 1/sqrt(n_in)
        return (rng.standard_normal(shape) / np.sqrt(shape[-1])).astype(np.float32)

    def norm(n):
        return (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)

    q_dim, kv_dim = N_HEADS * spec.head_dim, spec.n_kv_heads * spec.head_dim
    w = {"token_embd.weight": (0.1 * rng.standard_normal((vocab_size, DIM))).astype(np.float32)}
    for i in range(spec.n_layers):
        p = f"blk.{i}."
        w[p + "attn_norm.weight"] = norm(DIM)
        if spec.fused_qkv:
            w[p + "attn_qkv.weight"] = dense(q_dim + 2 * kv_dim, DIM)
        else:
            w[p + "attn_q.weight"] = dense(q_dim, DIM)
            w[p + "attn_k.weight"] = dense(kv_dim, DIM)
            w[p + "attn_v.weight"] = dense(kv_dim, DIM)
        if spec.qkv_bias:
            w[p + "attn_q.bias"] = (0.1 * rng.standard_normal(q_dim)).astype(np.float32)
            w[p + "attn_k.bias"] = (0.1 * rng.standard_normal(kv_dim)).astype(np.float32)
            w[p + "attn_v.bias"] = (0.1 * rng.standard_normal(kv_dim)).astype(np.float32)
        if spec.qk_norm:
            w[p + "attn_q_norm.weight"] = norm(spec.head_dim)
            w[p + "attn_k_norm.weight"] = norm(spec.head_dim)
        w[p + "attn_output.weight"] = dense(DIM, q_dim)
        if spec.post_norms:
            w[p + "post_attention_norm.weight"] = norm(DIM)
        w[p + "ffn_norm.weight"] = norm(DIM)
        if spec.n_experts:
            w[p + "ffn_gate_inp.weight"] = dense(spec.n_experts, DIM)
            w[p + "ffn_gate_exps.weight"] = dense(spec.n_experts, spec.ffn, DIM)
            w[p + "ffn_up_exps.weight"] = dense(spec.n_experts, spec.ffn, DIM)
            w[p + "ffn_down_exps.weight"] = dense(spec.n_experts, DIM, spec.ffn)
            if spec.shared_ffn:
                w[p + "ffn_gate_shexp.weight"] = dense(spec.shared_ffn, DIM)
                w[p + "ffn_up_shexp.weight"] = dense(spec.shared_ffn, DIM)
                w[p + "ffn_down_shexp.weight"] = dense(DIM, spec.shared_ffn)
        elif spec.fused_ffn:
            w[p + "ffn_up.weight"] = dense(2 * spec.ffn, DIM)
            w[p + "ffn_down.weight"] = dense(DIM, spec.ffn)
        else:
            w[p + "ffn_gate.weight"] = dense(spec.ffn, DIM)
            w[p + "ffn_up.weight"] = dense(spec.ffn, DIM)
            w[p + "ffn_down.weight"] = dense(DIM, spec.ffn)
        if spec.post_norms:
            w[p + "post_ffw_norm.weight"] = norm(DIM)
        if spec.rope_factors and i == 0:  # one pair for all layers, as convert_hf_to_gguf writes it
            half = (spec.rope_dim or spec.head_dim) // 2
            w["rope_factors_long.weight"] = np.linspace(1.0, 12.0, half).astype(np.float32)
            w["rope_factors_short.weight"] = (1.0 + 0.05 * np.arange(half)).astype(np.float32)
    w["output_norm.weight"] = norm(DIM)
    if spec.untied:
        w["output.weight"] = dense(vocab_size, DIM)
    return w


def write_f32(path: Path, spec: Spec, name: str) -> None:
    import gguf
    tokens, types, merges = vocabulary(spec.extra_specials)
    writer = gguf.GGUFWriter(str(path), arch=spec.arch)
    writer.add_name(name)
    writer.add_file_type(0)                               # LLAMA_FTYPE_ALL_F32
    writer.add_context_length(spec.context)
    writer.add_embedding_length(DIM)
    writer.add_block_count(spec.n_layers)
    writer.add_feed_forward_length(spec.ffn)
    writer.add_head_count(N_HEADS)
    writer.add_head_count_kv(spec.n_kv_heads)
    writer.add_rope_dimension_count(spec.rope_dim or spec.head_dim)
    if "rope_freq_base" not in spec.keys:
        writer.add_rope_freq_base(ROPE_BASE)
    writer.add_layer_norm_rms_eps(RMS_EPS)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(BOS_ID)
    writer.add_eos_token_id(EOS_ID)
    writer.add_add_bos_token(False)
    writer.add_chat_template((TEMPLATES / spec.template).read_text() if spec.template else CHAT_TEMPLATE)
    if spec.head_dim != DIM // N_HEADS:
        writer.add_key_length(spec.head_dim)
        writer.add_value_length(spec.head_dim)
    if spec.n_experts:
        writer.add_expert_count(spec.n_experts)
        writer.add_expert_used_count(spec.n_experts_used)
    for key, value in spec.keys.items():
        if key == "rope_scaling_type":
            value = gguf.RopeScalingType(value)
        getattr(writer, f"add_{key}")(value)
    for tensor_name, array in weights(spec, len(tokens)).items():
        writer.add_tensor(tensor_name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def quantize(src: Path, dst: Path, ftype_name: str) -> None:
    import llama_cpp
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, ftype_name)
    params.nthread = 1
    params.pure = True                      # every 2-D tensor in the target type, no mixes
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if rc != 0:
        raise RuntimeError(f"llama_model_quantize {src.name} -> {dst.name} ({ftype_name}) failed: {rc}")


def check(path: Path) -> str:
    """Load in llama.cpp, evaluate a few tokens, return a one-line summary (raises on bad logits)."""
    import llama_cpp
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=64, logits_all=False, verbose=False, seed=0)
    ids = llm.tokenize(b"hello world, the sea", add_bos=False)
    llm.eval(ids)
    logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(llm.n_vocab(),)).copy()
    if logits.shape != (llm.n_vocab(),) or not np.isfinite(logits).all():
        raise RuntimeError(f"{path.name}: bad logits {logits.shape}")
    top = np.argsort(logits)[::-1][:3]
    return (f"{path.name}: {len(ids)} tokens, logits std {logits.std():.2f}, "
            f"top {top.tolist()} margin {logits[top[0]] - logits[top[1]]:.3f}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=OUT_DIR)
    ap.add_argument("--check", action="store_true", help="load every file in llama.cpp afterwards")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    manifest = {}
    with tempfile.TemporaryDirectory() as tmp:
        for spec in MODELS:
            base = Path(tmp) / f"{spec.prefix}-F32.gguf"
            write_f32(base, spec, f"chatfile synthetic {spec.prefix}")
            for qname in spec.types:
                dst = args.out / f"{spec.prefix}-{qname}.gguf"
                quantize(base, dst, FTYPES[qname])
                manifest[dst.name] = {
                    "architecture": spec.arch, "type": qname, "n_layers": spec.n_layers,
                    "tied_output": not spec.untied,
                    "bytes": dst.stat().st_size, "sha256": hashlib.sha256(dst.read_bytes()).hexdigest(),
                }
                print(f"wrote {dst} ({dst.stat().st_size} bytes)", flush=True)
    (args.out / "MANIFEST.json").write_text(json.dumps(manifest, indent=1) + "\n")
    total = sum(m["bytes"] for m in manifest.values())
    print(f"{len(manifest)} files, {total / 1e6:.1f} MB")
    if args.check:
        for name in manifest:
            print(check(args.out / name), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
