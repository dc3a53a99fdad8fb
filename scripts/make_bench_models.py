#!/usr/bin/env python3
"""Write benchmark models with the quant mixes people download, for `chatfile bench` and scripts/bench.py.

    /work/llcpp/bin/python scripts/make_bench_models.py [--out DIR] [--only NAME,...]

needs numpy, gguf and llama-cpp-python (its quantizer, llama_model_quantize, makes the mixes exactly as
llama-quantize does: Q4_K_M puts Q6_K on half of ffn_down and attn_v and on the output, and falls back
to Q5_0 / Q5_1 / Q8_0 where a row length is not a multiple of 256). Written to DIR (default
~/.cache/chatfile/models/bench):

    qwen05b-{Q4_K_M,Q5_K_M,Q6_K}.gguf   random weights in the shapes of Qwen2.5-0.5B (architecture
                                        qwen2: 24 layers, dim 896, FFN 4864, 14 heads / 2 KV heads of 64,
                                        attention biases, vocabulary 151936, tied output), from an F16
                                        source; speed only, the text is noise
    gemma3-270m-{Q5_K_M,Q6_K}.gguf      Gemma 3 270M requantized from the Q4_K_M file
                                        (allow_requantize; speed only)
    moe-8x2-Q4_K.gguf, moe-dense-Q4_K.gguf
                                        the cost of routed experts: llama (Mixtral-style), 8 layers,
                                        dim 1024, 8 experts of width 1024 with 2 used per token, and its
                                        dense twin of FFN width 2048 (same active width); pure Q4_K
    smollm2-IQ4_NL.gguf                 SmolLM2-135M requantized to pure IQ4_NL (its 576-wide rows rule
                                        out IQ4_XS, which needs multiples of 256)

Files that exist are kept. Benchmarks are not tests; nothing here is used by `make test`.
"""
from __future__ import annotations

import argparse
import ctypes
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import fetch_models  # noqa: E402
from make_synthetic import BOS_ID, EOS_ID, vocabulary  # noqa: E402

QWEN05B = dict(arch="qwen2", n_layers=24, dim=896, ffn=4864, n_heads=14, n_kv_heads=2, head_dim=64,
               vocab=151936, rope_base=1e6, eps=1e-6, context=32768, qkv_bias=True)
# the cost of routed experts: one llama (Mixtral-style) model with 8 experts of width 1024, 2 used per
# token, and its dense twin whose FFN has the same active width (2 x 1024); same attention, small vocab
MOE_BASE = dict(arch="llama", n_layers=8, dim=1024, n_heads=16, n_kv_heads=4, head_dim=64, vocab=0,
                rope_base=1e4, eps=1e-5, context=4096, qkv_bias=False)
MOE_PAIR = {"moe-dense": dict(MOE_BASE, ffn=2048),
            "moe-8x2": dict(MOE_BASE, ffn=1024, n_experts=8, n_experts_used=2)}
MIXES = {"Q4_K_M": "LLAMA_FTYPE_MOSTLY_Q4_K_M", "Q5_K_M": "LLAMA_FTYPE_MOSTLY_Q5_K_M",
         "Q6_K": "LLAMA_FTYPE_MOSTLY_Q6_K"}


def write_f16(path: Path, c: dict, name: str) -> None:
    """Random-weight GGUF in the shapes of c (QWEN05B, MOE_PAIR), F16 (norms and biases F32)."""
    import gguf
    rng = np.random.default_rng(5)
    tokens, types, merges = vocabulary()
    n_fill = max(0, c["vocab"] - len(tokens))           # plain filler tokens up to the real vocab size
    tokens = tokens + [f"<fill_{i}>" for i in range(n_fill)]
    # NORMAL, as a real vocabulary types nearly all of its tokens: typed USER_DEFINED (as they were until
    # 2026-12-04) the 151k fillers cost a launch 0.26 s in the special-token splitter
    types = types + [1] * n_fill
    w = gguf.GGUFWriter(str(path), arch=c["arch"])
    w.add_name(name)
    w.add_file_type(1)                                  # LLAMA_FTYPE_MOSTLY_F16
    w.add_context_length(c["context"])
    w.add_embedding_length(c["dim"])
    w.add_block_count(c["n_layers"])
    w.add_feed_forward_length(c["ffn"])
    w.add_head_count(c["n_heads"])
    w.add_head_count_kv(c["n_kv_heads"])
    w.add_rope_freq_base(c["rope_base"])
    w.add_layer_norm_rms_eps(c["eps"])
    w.add_vocab_size(len(tokens))
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(BOS_ID)
    w.add_eos_token_id(EOS_ID)
    w.add_add_bos_token(False)
    n_exp = c.get("n_experts", 0)
    if n_exp:
        w.add_expert_count(n_exp)
        w.add_expert_used_count(c["n_experts_used"])

    def dense(*shape):                                  # [..., n_out, n_in]
        return (rng.standard_normal(shape, dtype=np.float32) / np.sqrt(shape[-1])).astype(np.float16)

    dim, hd, kv = c["dim"], c["head_dim"], c["n_kv_heads"] * c["head_dim"]
    w.add_tensor("token_embd.weight", dense(len(tokens), dim))
    w.add_tensor("output_norm.weight", np.ones(dim, np.float32))
    for i in range(c["n_layers"]):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", np.ones(dim, np.float32))
        w.add_tensor(p + "attn_q.weight", dense(c["n_heads"] * hd, dim))
        w.add_tensor(p + "attn_k.weight", dense(kv, dim))
        w.add_tensor(p + "attn_v.weight", dense(kv, dim))
        for name, n in (("attn_q.bias", c["n_heads"] * hd), ("attn_k.bias", kv), ("attn_v.bias", kv)):
            if c["qkv_bias"]:
                w.add_tensor(p + name, (rng.standard_normal(n, dtype=np.float32) * 0.1))
        w.add_tensor(p + "attn_output.weight", dense(dim, c["n_heads"] * hd))
        w.add_tensor(p + "ffn_norm.weight", np.ones(dim, np.float32))
        if n_exp:
            w.add_tensor(p + "ffn_gate_inp.weight", dense(n_exp, dim).astype(np.float32))
        e = (n_exp,) if n_exp else ()
        x = "_exps" if n_exp else ""
        w.add_tensor(p + f"ffn_gate{x}.weight", dense(*e, c["ffn"], dim))
        w.add_tensor(p + f"ffn_up{x}.weight", dense(*e, c["ffn"], dim))
        w.add_tensor(p + f"ffn_down{x}.weight", dense(*e, dim, c["ffn"]))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def quantize(src: Path, dst: Path, ftype_name: str, requantize: bool = False, pure: bool = False) -> None:
    import llama_cpp
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, ftype_name)
    params.nthread = 2
    params.allow_requantize = requantize
    params.pure = pure                                  # every 2-D tensor in the target type
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if rc != 0:
        raise RuntimeError(f"llama_model_quantize {src.name} -> {dst.name} ({ftype_name}) failed: {rc}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path.home() / ".cache" / "chatfile" / "models" / "bench")
    ap.add_argument("--only", default="", help="comma-separated file stems to write (default: all)")
    a = ap.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    wanted = set(filter(None, a.only.split(",")))
    jobs = [(f"qwen05b-{m}", None, m) for m in MIXES] + \
           [(f"gemma3-270m-{m}", "gemma3", m) for m in ("Q5_K_M", "Q6_K")] + \
           [(f"{pair}-Q4_K", pair, "Q4_K") for pair in MOE_PAIR] + \
           [("smollm2-IQ4_NL", "smollm2", "IQ4_NL")]
    src_f16 = a.out / "qwen05b-F16.gguf"
    for stem, base, mix in jobs:
        dst = a.out / f"{stem}.gguf"
        if (wanted and stem not in wanted) or dst.exists():
            continue
        if base is None:
            if not src_f16.exists():
                write_f16(src_f16, QWEN05B, "qwen05b-shaped random")
            quantize(src_f16, dst, MIXES[mix])
        elif base in MOE_PAIR:                          # pure Q4_K: both files differ only in the FFN
            src = a.out / f"{base}-F16.gguf"
            write_f16(src, MOE_PAIR[base], f"{base} random")
            quantize(src, dst, "LLAMA_FTYPE_MOSTLY_Q4_K_S", pure=True)
            src.unlink()
        elif mix == "IQ4_NL":                           # pure: every matrix on the IQ4_NL kernels
            quantize(fetch_models.model_path(base), dst, "LLAMA_FTYPE_MOSTLY_IQ4_NL", requantize=True,
                     pure=True)
        else:
            quantize(fetch_models.model_path(base), dst, MIXES[mix], requantize=True)
        print(f"wrote {dst} ({dst.stat().st_size / 1e6:.0f} MB)")
    if src_f16.exists():
        src_f16.unlink()                                # 1 GB, not needed once quantized
    return 0


if __name__ == "__main__":
    sys.exit(main())
