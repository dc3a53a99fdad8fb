"""Write the tiny random-weight GGUF models in data/synthetic/ that the model tests run on.

Run (it needs numpy, gguf and llama-cpp-python, which builds the K-quants; the oracle venv has all three):

    /work/llcpp/bin/python scripts/make_synthetic.py            # writes data/synthetic/*.gguf
    /work/llcpp/bin/python scripts/make_synthetic.py --check    # then loads each in llama.cpp

Deterministic (fixed seeds, one quantization thread): re-running rewrites identical files, and
MANIFEST.json records each file's sha256 so a change shows up in review.

What is written (one F32 model per architecture, then llama.cpp's quantizer with `pure` set, so
every 2-D weight takes the target type and the 1-D norms and biases stay F32):
    llama-{TYPE}.gguf          architecture llama, tied output head (no output.weight, like SmolLM2),
                               one file per type: F32 F16 BF16 Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q2_K .. Q6_K
    llama-untied-Q4_K.gguf     architecture llama with a separate output.weight
    qwen2-{TYPE}.gguf          architecture qwen2 (1 layer): attn_q/k/v biases, NEOX RoPE, own
                               output.weight (F32, Q8_0)
Total 16.0 MB. Shapes: 2 layers (qwen2: 1), dim 256 (K-quant rows come in blocks of 256),
4 heads of 64, 2 KV heads, FFN 256 (512 would take the set past 20 MB), vocabulary 300: GPT-2
byte-level BPE (256 byte tokens, 3 specials, 41 merges learned from a fixed text), chat template
ChatML. Weights are normal * 1/sqrt(fan_in) so activations stay O(1) and logits spread (std ~1.5).
"""
from __future__ import annotations

import argparse
import collections
import ctypes
import hashlib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

OUT_DIR = Path(__file__).resolve().parent.parent / "data" / "synthetic"

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
    "F32": "LLAMA_FTYPE_ALL_F32", "F16": "LLAMA_FTYPE_MOSTLY_F16", "BF16": "LLAMA_FTYPE_MOSTLY_BF16",
    "Q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0", "Q4_1": "LLAMA_FTYPE_MOSTLY_Q4_1",
    "Q5_0": "LLAMA_FTYPE_MOSTLY_Q5_0", "Q5_1": "LLAMA_FTYPE_MOSTLY_Q5_1", "Q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0",
    "Q2_K": "LLAMA_FTYPE_MOSTLY_Q2_K", "Q3_K": "LLAMA_FTYPE_MOSTLY_Q3_K_S",
    "Q4_K": "LLAMA_FTYPE_MOSTLY_Q4_K_S", "Q5_K": "LLAMA_FTYPE_MOSTLY_Q5_K_S", "Q6_K": "LLAMA_FTYPE_MOSTLY_Q6_K",
}
MODELS = [  # (file prefix, architecture, layers, separate output.weight, seed, types)
    ("llama", "llama", N_LAYERS, False, 1, list(FTYPES)),
    ("llama-untied", "llama", N_LAYERS, True, 2, ["Q4_K"]),
    ("qwen2", "qwen2", 1, True, 3, ["F32", "Q8_0"]),     # one layer: the F32 file is the big one
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


def vocabulary() -> tuple[list[str], list[int], list[str]]:
    """tokens, token types, merges ("a b")."""
    b2u = byte_to_unicode()
    merges = learn_merges(CORPUS, N_MERGES)
    tokens = SPECIALS + [b2u[b] for b in range(256)] + [a + b for a, b in merges]
    types = [3] * len(SPECIALS) + [1] * (len(tokens) - len(SPECIALS))   # CONTROL, NORMAL
    assert len(set(tokens)) == len(tokens)
    return tokens, types, [f"{a} {b}" for a, b in merges]


def weights(arch: str, n_layers: int, vocab_size: int, untied: bool, seed: int) -> dict[str, np.ndarray]:
    """name -> float32 array in numpy order ([ne1, ne0]: rows first)."""
    rng = np.random.default_rng(seed)

    def dense(n_out, n_in):          # [n_out, n_in], std 1/sqrt(n_in)
        return (rng.standard_normal((n_out, n_in)) / np.sqrt(n_in)).astype(np.float32)

    def norm(n):
        return (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)

    kv_dim = N_KV_HEADS * HEAD_DIM
    w = {"token_embd.weight": (0.1 * rng.standard_normal((vocab_size, DIM))).astype(np.float32)}
    for i in range(n_layers):
        p = f"blk.{i}."
        w[p + "attn_norm.weight"] = norm(DIM)
        w[p + "attn_q.weight"] = dense(DIM, DIM)
        w[p + "attn_k.weight"] = dense(kv_dim, DIM)
        w[p + "attn_v.weight"] = dense(kv_dim, DIM)
        if arch == "qwen2":
            w[p + "attn_q.bias"] = (0.1 * rng.standard_normal(DIM)).astype(np.float32)
            w[p + "attn_k.bias"] = (0.1 * rng.standard_normal(kv_dim)).astype(np.float32)
            w[p + "attn_v.bias"] = (0.1 * rng.standard_normal(kv_dim)).astype(np.float32)
        w[p + "attn_output.weight"] = dense(DIM, DIM)
        w[p + "ffn_norm.weight"] = norm(DIM)
        w[p + "ffn_gate.weight"] = dense(FFN, DIM)
        w[p + "ffn_up.weight"] = dense(FFN, DIM)
        w[p + "ffn_down.weight"] = dense(DIM, FFN)
    w["output_norm.weight"] = norm(DIM)
    if untied:
        w["output.weight"] = dense(vocab_size, DIM)
    return w


def write_f32(path: Path, arch: str, n_layers: int, untied: bool, seed: int, name: str) -> None:
    import gguf
    tokens, types, merges = vocabulary()
    writer = gguf.GGUFWriter(str(path), arch=arch)
    writer.add_name(name)
    writer.add_file_type(0)                               # LLAMA_FTYPE_ALL_F32
    writer.add_context_length(CONTEXT)
    writer.add_embedding_length(DIM)
    writer.add_block_count(n_layers)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(N_HEADS)
    writer.add_head_count_kv(N_KV_HEADS)
    writer.add_rope_dimension_count(HEAD_DIM)
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
    writer.add_chat_template(CHAT_TEMPLATE)
    for tensor_name, array in weights(arch, n_layers, len(tokens), untied, seed).items():
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
        for prefix, arch, n_layers, untied, seed, types in MODELS:
            base = Path(tmp) / f"{prefix}-F32.gguf"
            write_f32(base, arch, n_layers, untied, seed, f"chatfile synthetic {prefix}")
            for qname in types:
                dst = args.out / f"{prefix}-{qname}.gguf"
                quantize(base, dst, FTYPES[qname])
                manifest[dst.name] = {
                    "architecture": arch, "type": qname, "n_layers": n_layers, "tied_output": not untied,
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
