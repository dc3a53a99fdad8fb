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


# ---- cutting special tokens out of a text ---------------------------------------------------------
#
# llama.cpp's tokenizer_st_partition takes the special tokens one at a time, longest first, and splits
# every text fragment left so far at each leftmost, non-overlapping occurrence of the token (with the
# token's lstrip/rstrip eating the whitespace beside it). Done literally, as `split_reference` does, that
# copies the rest of a fragment at every match and walks every fragment once per token: quadratic in
# the text ("<|im_end|>" * 200000) and in the number of special tokens that occur. `SpecialSplitter`
# gives the same fragments in time linear in the text: occurrences come from one index per 3-character
# prefix (or from a search, for the few tokens whose prefix is everywhere, such as runs of spaces), and
# a bytearray marks the characters already claimed by a token or its stripped whitespace, so checking a
# candidate, or skipping to the next stretch of unclaimed text long enough for the token, is one `find`.

_CONTROL_OR_UNKNOWN = int(Attr.CONTROL | Attr.UNKNOWN)
_LSTRIP, _RSTRIP = int(Attr.LSTRIP), int(Attr.RSTRIP)
_C_SPACE = " \t\n\v\f\r"                 # C isspace, what llama.cpp strips
_PREFIX = 3


class SpecialSplitter:
    """Special tokens (ids in llama.cpp's order: longest first, ties by id) cut out of texts."""

    def __init__(self, tokens: list[str], special_ids: list[int], attrs: list[int]):
        self.ids = {tokens[i]: i for i in special_ids}
        self.rank = {tokens[i]: k for k, i in enumerate(special_ids)}
        self.attrs = attrs
        self.short = [t for t in self.ids if len(t) < _PREFIX]
        self.groups: dict[str, tuple[set[str], list[int]]] = {}
        for t in self.ids:
            if len(t) >= _PREFIX:
                members, _ = self.groups.setdefault(t[:_PREFIX], (set(), []))
                members.add(t)
        for members, lengths in self.groups.values():
            lengths.extend(sorted({len(t) for t in members}))

    def occurrences(self, text: str) -> dict[str, list[int] | None]:
        """Each special token that occurs in `text`: the sorted start of every occurrence (overlapping
        ones too), or None where finding them by search is cheaper (see `split`)."""
        found: dict[str, list[int] | None] = {t: None for t in self.short if t in text}
        # cost model, in Python steps: listing a group's occurrences checks each length at each place
        # its prefix occurs; a search scans the text once per member at C speed (~2000 characters a step)
        per_search = 1 + len(text) // 2000
        for prefix, (members, lengths) in self.groups.items():
            count = text.count(prefix)
            if not count:
                continue
            if count * len(lengths) > len(members) * per_search:     # e.g. runs of spaces in code
                found.update((t, None) for t in members if t in text)
                continue
            at = text.find(prefix)
            while at >= 0:
                for n in lengths:
                    t = text[at:at + n]
                    if t in members:
                        found.setdefault(t, []).append(at)
                at = text.find(prefix, at + 1)
        return found

    def split(self, text: str, parse_special: bool) -> list:
        """tokenizer_st_partition: `text` as a list of non-empty str fragments and int token ids."""
        found = self.occurrences(text)
        if not parse_special:
            found = {t: at for t, at in found.items() if not self.attrs[self.ids[t]] & _CONTROL_OR_UNKNOWN}
        if not found:
            return [text]
        claimed = bytearray(len(text))                 # [len(text)]: 1 where a token or its strip is
        regions = []                                   # (start, token id, end): a token and what it strips
        for tok in sorted(found, key=self.rank.__getitem__):
            tid, starts = self.ids[tok], found[tok]
            n = len(tok)
            if starts is None:                         # search, skipping claimed stretches
                room = bytes(n)
                at = text.find(tok)
                while at >= 0:
                    blocked = claimed.rfind(1, at, at + n)
                    if blocked < 0:
                        at = text.find(tok, self._claim(text, claimed, at, n, tid, regions))
                    else:
                        free = claimed.find(room, blocked + 1)     # n unclaimed characters in a row
                        at = text.find(tok, free) if free >= 0 else -1
            else:
                end = 0
                for at in starts:
                    if at >= end and claimed.find(1, at, at + n) < 0:
                        end = self._claim(text, claimed, at, n, tid, regions)
        regions.sort()
        out, at = [], 0
        for start, tid, end in regions:
            if start > at:
                out.append(text[at:start])
            out.append(tid)
            at = end
        if at < len(text):
            out.append(text[at:])
        return out

    def _claim(self, text: str, claimed: bytearray, at: int, n: int, tid: int, regions: list) -> int:
        """Token `tid` at text[at:at + n], with the whitespace its lstrip/rstrip takes up to the nearest
        claimed character; returns the end of what it claimed."""
        start, end, attr = at, at + n, self.attrs[tid]
        if attr & _LSTRIP:
            while start > 0 and text[start - 1] in _C_SPACE and not claimed[start - 1]:
                start -= 1
        if attr & _RSTRIP:
            while end < len(text) and text[end] in _C_SPACE and not claimed[end]:
                end += 1
        claimed[start:end] = b"\x01" * (end - start)
        regions.append((start, tid, end))
        return end


def split_reference(text: str, tokens: list[str], special_ids: list[int], attrs: list[int],
                    parse_special: bool) -> list:
    """The reference twin of SpecialSplitter.split: tokenizer_st_partition as llama.cpp writes it
    (quadratic; the tests pin the two together)."""
    frags: list = [text]
    for tid in special_ids:
        attr, tok = attrs[tid], tokens[tid]
        if not parse_special and attr & _CONTROL_OR_UNKNOWN:
            continue
        out = []
        for frag in frags:
            if isinstance(frag, int) or tok not in frag:
                out.append(frag)
                continue
            rest = frag
            while True:
                at = rest.find(tok)
                if at < 0:
                    if rest:
                        out.append(rest)
                    break
                left, rest = rest[:at], rest[at + len(tok):]
                if attr & _LSTRIP:
                    left = left.rstrip(_C_SPACE)
                if left:
                    out.append(left)
                out.append(tid)
                if attr & _RSTRIP:
                    rest = rest.lstrip(_C_SPACE)
        frags = out
    return frags
