"""Which tokens are special, and how, as llama.cpp decides it when it loads a vocabulary.

GGUF stores one `tokenizer.ggml.token_type` per token. llama.cpp (src/llama-vocab.cpp,
`llama_vocab::impl::load`) turns it into attributes (`llama_token_attr`) and then adjusts them from
the token *texts*: EOT/EOM/FIM tokens the metadata does not name are found by text and forced to be
control tokens, control tokens named "unused" are unused, the end-of-generation set is collected from
a list of texts plus EOS/EOT/EOM, and a few model names get lstrip/rstrip attributes. These are those
rules, kept apart from the tokenizer algorithms that read the result.
"""
from __future__ import annotations

from enum import IntFlag

import numpy as np

from .ggml import TokenType


class Attr(IntFlag):
    """llama_token_attr."""
    UNDEFINED = 0
    UNKNOWN = 1 << 0
    UNUSED = 1 << 1
    NORMAL = 1 << 2
    CONTROL = 1 << 3
    USER_DEFINED = 1 << 4
    BYTE = 1 << 5
    LSTRIP = 1 << 7
    RSTRIP = 1 << 8


SPECIAL = int(Attr.CONTROL | Attr.USER_DEFINED | Attr.UNKNOWN)   # cut out of the text before tokenizing

_TYPE_TO_ATTR = {TokenType.UNKNOWN: Attr.UNKNOWN, TokenType.UNUSED: Attr.UNUSED,
                 TokenType.NORMAL: Attr.NORMAL, TokenType.CONTROL: Attr.CONTROL,
                 TokenType.USER_DEFINED: Attr.USER_DEFINED, TokenType.BYTE: Attr.BYTE}

# The ids the metadata may name (tokenizer.ggml.<name>_token_id), and the older key names of three.
SPECIAL_IDS = ("bos", "eos", "eot", "eom", "unk", "sep", "pad", "mask",
               "fim_pre", "fim_suf", "fim_mid", "fim_pad", "fim_rep", "fim_sep")
DEPRECATED_KEYS = {"fim_pre": "tokenizer.ggml.prefix_token_id", "fim_suf": "tokenizer.ggml.suffix_token_id",
                   "fim_mid": "tokenizer.ggml.middle_token_id"}

# Texts by which llama.cpp recognises a token the metadata does not name, in llama.cpp's order.
_BY_TEXT = {
    "eot": ("<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>",
            "<EOT>", "_<EOT>", "[EOT]", "<｜end▁of▁sentence｜>", "<end_of_utterance>"),
    "eom": ("<|eom_id|>",),
    "fim_pre": ("<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<｜fim▁begin｜>", "<PRE>", "▁<PRE>",
                "<|code_prefix|>", "<|prefix|>"),
    "fim_suf": ("<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<｜fim▁hole｜>", "<SUF>", "▁<SUF>",
                "<|code_suffix|>", "<|suffix|>"),
    "fim_mid": ("<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<｜fim▁end｜>", "<MID>", "▁<MID>",
                "<|code_middle|>", "<|middle|>"),
    "fim_pad": ("<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"),
    "fim_rep": ("<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"),
    "fim_sep": ("<|file_sep|>",),
}
_EOG_TEXTS = frozenset(("<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>",
                        "<|calls|>", "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>",
                        "_<EOT>", "[EOT]", "[EOS]", "<|end_of_text|>", "<end_of_utterance>", "<eos>",
                        "<turn|>", "<|tool_response>", "<｜end▁of▁sentence｜>", "[e~["))
_ALWAYS_RENDERED = ("<|channel|>", "<|message|>", "<|start|>", "<|constrain|>")   # gpt-oss


def token_attrs(types: np.ndarray) -> list[int]:
    """tokenizer.ggml.token_type -> llama_token_attr per token (an unknown type is UNDEFINED)."""
    table = np.zeros(max(TokenType) + 1, dtype=np.int64)
    for ttype, attr in _TYPE_TO_ATTR.items():
        table[ttype] = attr
    known = (types >= 0) & (types < len(table))
    return np.where(known, table[np.where(known, types, 0)], 0).tolist()


def find_by_text(ids: dict, tokens: list[str], token_to_id: dict, attrs: list[int]) -> None:
    """Fill the EOT/EOM/FIM ids the metadata left unset from the token texts; mark those control and
    control tokens named "unused" unused. When several texts fit, llama.cpp takes the first in the
    iteration order of its hash map (SmolLM2: <|endoftext|>, Llama 3: <|eot_id|>); we take the first
    in its list. Only the reported id can differ: every candidate is an end-of-generation token."""
    for name, texts in _BY_TEXT.items():
        if ids[name] is None:
            found = [token_to_id[t] for t in texts if t in token_to_id]
            if found:
                ids[name] = found[0]
                attrs[found[0]] |= int(Attr.CONTROL)
    for i in np.flatnonzero(np.array(attrs) & int(Attr.CONTROL)).tolist():
        if "unused" in tokens[i]:
            attrs[i] |= int(Attr.UNUSED)


def end_of_generation(ids: dict, tokens: list[str], token_to_id: dict, attrs: list[int]) -> frozenset[int]:
    """The end-of-generation set: FIM pad/repo/sep, the EOG texts (forced control), EOS, EOT, EOM."""
    eog = {ids[k] for k in ("fim_pad", "fim_rep", "fim_sep", "eos", "eot", "eom") if ids[k] is not None}
    for t in _EOG_TEXTS & token_to_id.keys():
        eog.add(token_to_id[t])
        attrs[token_to_id[t]] |= int(Attr.CONTROL)
    for t in _ALWAYS_RENDERED:
        if t in token_to_id:
            attrs[token_to_id[t]] = int(Attr.USER_DEFINED)
    texts = {tokens[i]: i for i in eog}
    # o200k_harmony / solar-open: <|end|> closes a message there, not the generation
    has_call = "<|call|>" in texts or "<|calls|>" in texts
    if "<|end|>" in texts and has_call and ("<|return|>" in texts or "<|flush|>" in texts):
        eog.discard(texts["<|end|>"])
        attrs[texts["<|end|>"]] = int(Attr.USER_DEFINED)
    if "<|tool_response>" in texts and "</s>" in texts:     # gemma4 / paddleocr: </s> is text
        eog.discard(texts["</s>"])
        attrs[texts["</s>"]] = int(Attr.NORMAL)
    return frozenset(eog)


def strip_rules(attrs: list[int], token_to_id: dict, name: str, pre: str, arch: str) -> None:
    """Per-token lstrip/rstrip, which GGUF does not store: llama.cpp sets them by model name."""
    def set_attr(text, attr, on):
        if text in token_to_id:
            i = token_to_id[text]
            attrs[i] = (attrs[i] | attr) if on else (attrs[i] & ~attr)

    lstrip, rstrip = int(Attr.LSTRIP), int(Attr.RSTRIP)
    if any(s in pre for s in ("jina-v2-de", "jina-v2-es", "jina-v2-code")) or \
            any(s in arch for s in ("nomic-bert-moe", "jina-bert-v3")):
        set_attr("<mask>", lstrip, True)
    elif "phi-3" in name or "phi3" in name:
        for i in np.flatnonzero(np.array(attrs) & SPECIAL).tolist():
            attrs[i] |= rstrip
        set_attr("</s>", rstrip, True)
        for t in ("<unk>", "<s>", "<|endoftext|>"):
            set_attr(t, rstrip, False)
    elif "modern-bert" in name:
        set_attr("[MASK]", lstrip, True)
