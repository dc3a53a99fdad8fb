"""Tokenizers from GGUF metadata only: byte-level BPE (`gpt2`) and SentencePiece (`llama`).

A port of llama.cpp's src/llama-vocab.cpp (llama-cpp-python 0.3.36), token for token:
  - vocabulary flags and special ids as `llama_vocab::impl::load` derives them (defaults per model type
    and pre-tokenizer, then metadata, then the end-of-generation tokens it recognises by their text);
  - special tokens cut out of the text first (`tokenizer_st_partition`), longest first; control
    tokens only when parse_special, user-defined tokens always (runtime/special_tokens.py);
  - `llm_tokenizer_bpe_session`: regex pre-tokenizer (runtime/pretokenize.py), then merges by rank;
  - `llm_tokenizer_spm_session`: bigram merges by score over U+2581-escaped text, byte fallback;
  - `detokenize` as `llama_detokenize(remove_special=false)`, with its clean-up of spaces.
Which tokens are special (attributes, end-of-generation set) is decided in runtime/special_tokens.py.
Both tokenizers cache the ids of each pre-token (BPE) or space-delimited segment (SPM): encoding is
fast where text repeats words, and the merge loops only run on words seen for the first time.
"""
from __future__ import annotations

import codecs
from array import array
import heapq
import re

import numpy as np

from .ggml import Keys, TokenType
from .pretokenize import CHAR_TO_BYTE, NO_DEFAULT_BOS, PRE_TOKENIZERS, PreTokenizer, byte_encode
from .special_tokens import (DEPRECATED_KEYS, SPECIAL, SPECIAL_IDS, Attr, SpecialSplitter, end_of_generation,
                             find_by_text, strip_rules, token_attrs)

SPACE = "\u2581"          # SentencePiece's visible space


class TokenizerError(ValueError):
    """The GGUF's tokenizer metadata is missing, malformed or of a kind we do not support."""


# plain ints: IntFlag arithmetic costs ~1 us an operation, seconds over a 262k vocabulary
_CONTROL_OR_UNKNOWN = int(Attr.CONTROL | Attr.UNKNOWN)
_USER_DEFINED, _NORMAL, _BYTE = int(Attr.USER_DEFINED), int(Attr.NORMAL), int(Attr.BYTE)
# The word cache, bounded in bytes (a server runs for days, and a request can hold a 2 MB word): words
# longer than _CACHE_WORD are not kept (they rarely repeat); the cache starts afresh when its estimated
# size (a dict slot, str and tuple headers per entry, 4 bytes per character, 8 per id) passes _CACHE_BYTES.
_CACHE_WORD = 256
_CACHE_BYTES = 32 << 20
_ENTRY_BYTES = 200
_HEX = frozenset("0123456789abcdefABCDEF")


class Tokenizer:
    """Text <-> token ids exactly as llama.cpp does it for one GGUF vocabulary."""

    def __init__(self, meta: dict):
        model = meta.get(Keys.TOKENIZER_MODEL)
        tokens = meta.get(Keys.TOKENS)
        if model not in ("gpt2", "llama"):
            raise TokenizerError(f"tokenizer {Keys.TOKENIZER_MODEL}={model!r} is not supported "
                                 "(supported: 'gpt2' byte-level BPE, 'llama' SentencePiece)")
        if not isinstance(tokens, list) or not tokens:
            raise TokenizerError(f"GGUF metadata has no {Keys.TOKENS} string array")
        self.model = model
        self.is_bpe = model == "gpt2"
        self.tokens: list[str] = list(tokens)
        if "" in self.tokens:                    # llama.cpp renames empty tokens
            self.tokens = [t if t else f"[EMPTY_{i}]" for i, t in enumerate(tokens)]
        self.vocab_size = n = len(self.tokens)
        self.token_to_id: dict[str, int] = dict(zip(self.tokens, range(n)))
        if len(self.token_to_id) != n:
            seen: dict[str, int] = {}
            for i, t in enumerate(self.tokens):
                if seen.setdefault(t, i) != i:
                    raise TokenizerError(f"duplicate token in vocabulary: {t!r} has ids {seen[t]} and {i}")

        # model-type defaults (llama_vocab::impl::load)
        ids = {"bos": 1, "eos": 2, "unk": 0} if not self.is_bpe else {"bos": 11, "eos": 11}
        if self.is_bpe:
            pre_name = meta.get(Keys.TOKENIZER_PRE) or "default"
            self.pre: PreTokenizer | None = PRE_TOKENIZERS.get(pre_name)
            if self.pre is None:
                raise TokenizerError(f"unknown pre-tokenizer {Keys.TOKENIZER_PRE}={pre_name!r} (chatfile "
                                     "knows llama.cpp's default, gpt-2, llama-bpe, qwen2, smollm, tekken "
                                     "and their families; see runtime/pretokenize.py)")
            if pre_name in NO_DEFAULT_BOS:
                del ids["bos"]
            self.pre_name = pre_name
            self.add_space_prefix, self.clean_spaces = False, self.pre.clean_spaces
            self.add_bos, self.add_eos = self.pre.add_bos, False
            self.ranks = self._read_merges(meta.get(Keys.MERGES))
        else:
            self.pre, self.pre_name, self.ranks = None, "default", {}
            self.add_space_prefix, self.clean_spaces = True, False
            self.add_bos, self.add_eos = True, False
        self.add_space_prefix = bool(meta.get(Keys.ADD_SPACE_PREFIX, self.add_space_prefix))
        self._merge_keys = _score_keys(self._read_array(meta, Keys.SCORES, np.float32, 0.0))   # SPM
        self.attrs = token_attrs(self._read_array(meta, Keys.TOKEN_TYPE, np.int32, int(TokenType.NORMAL)))

        # special ids: default unless the metadata names one inside the vocabulary
        for name in SPECIAL_IDS:
            default = ids.get(name)
            ids[name] = default if default is not None and default < n else None
            for key in (f"tokenizer.ggml.{name}_token_id", DEPRECATED_KEYS.get(name)):
                value = meta.get(key) if key else None
                if value is not None and 0 <= int(value) < n:
                    ids[name] = int(value)
        self.add_bos = bool(meta.get(Keys.ADD_BOS, self.add_bos))
        self.add_eos = bool(meta.get(Keys.ADD_EOS, self.add_eos))
        if self.add_bos and ids["bos"] is None:
            raise TokenizerError(f"{Keys.ADD_BOS} is true, but {Keys.BOS_ID} is not set")
        if self.add_eos and ids["eos"] is None:
            raise TokenizerError(f"{Keys.ADD_EOS} is true, but {Keys.EOS_ID} is not set")
        find_by_text(ids, self.tokens, self.token_to_id, self.attrs)
        self.bos_id, self.eos_id, self.eot_id, self.unk_id = ids["bos"], ids["eos"], ids["eot"], ids["unk"]
        self.fim = {k: ids[k] for k in SPECIAL_IDS if k.startswith("fim_")}   # fill-in-the-middle ids or None
        self.eog_ids = end_of_generation(ids, self.tokens, self.token_to_id, self.attrs)
        strip_rules(self.attrs, self.token_to_id, str(meta.get(Keys.NAME, "")).lower(), self.pre_name,
                    str(meta.get(Keys.ARCHITECTURE, "")))

        # special tokens matched in text, longest first (ties by id; llama.cpp's sort is unstable)
        self.special_ids = sorted(np.flatnonzero(np.array(self.attrs) & SPECIAL).tolist(),
                                  key=lambda i: (-len(self.tokens[i].encode()), i))
        self._specials = SpecialSplitter(self.tokens, self.special_ids, self.attrs)
        self._pieces: dict[tuple[int, bool], bytes] = {}
        self._cache: dict[str, tuple[int, ...]] = {}
        self._cache_bytes = 0
        if not self.is_bpe:
            # An SPM merge can only cross a U+2581 that follows a character c for which some token holds
            # c + U+2581; elsewhere the text splits into segments that merge independently (and cache).
            glue = _glue(self.tokens)
            guard = f"(?<![{''.join(map(re.escape, sorted(glue)))}])" if glue else ""
            self._segment = re.compile(guard + f"(?={SPACE})")

    @classmethod
    def from_metadata(cls, meta: dict) -> "Tokenizer":
        return cls(meta)

    # --- loading helpers ---------------------------------------------------------------------------
    @staticmethod
    def _read_array(meta: dict, key: str, dtype, fill) -> np.ndarray:
        n = len(meta[Keys.TOKENS])
        value = meta.get(key)
        if value is None:
            return np.full(n, fill, dtype=dtype)
        arr = np.asarray(value)
        if arr.ndim != 1 or len(arr) < n:
            raise TokenizerError(f"GGUF metadata {key} has {arr.size} entries for {n} tokens")
        return arr[:n].astype(dtype)

    @staticmethod
    def _read_merges(merges) -> dict[str, int]:
        """{merge line: rank}, the first of duplicate lines winning (std::unordered_map::emplace).
        llama.cpp splits a line at its first space after the first character into (left, right);
        `_merge_rank` looks the pair up by the line it comes from. Keyed by the line itself because
        building 280k tuple keys (Llama 3) took 0.22 s of every launch, the line dict 0.09 s."""
        if not isinstance(merges, list):
            raise TokenizerError(f"GGUF metadata has no {Keys.MERGES} string array (needed by BPE)")
        return dict(zip(reversed(merges), range(len(merges) - 1, -1, -1)))

    # --- text -> ids -------------------------------------------------------------------------------
    def tokenize(self, text: str, add_special: bool = True, parse_special: bool = True) -> list[int]:
        """llama_tokenize(text, add_special, parse_special)."""
        fragments = self._specials.split(text, parse_special) if text else []
        out: list[int] = []
        if add_special and self.add_bos:
            out.append(self.bos_id)
        prev_special = True                      # SPM: a space prefix goes before the first text
        for frag in fragments:
            if isinstance(frag, int):
                out.append(frag)
                prev_special = True
            elif self.is_bpe:
                out.extend(self._bpe(frag))
            else:
                if self.add_space_prefix and prev_special:
                    frag = " " + frag
                out.extend(self._spm(frag.replace(" ", SPACE)))
                prev_special = False
        if add_special and self.add_eos:
            out.append(self.eos_id)
        return out

    def _bpe(self, text: str) -> list[int]:
        out: list[int] = []
        cache = self._cache
        for word in self.pre.split(text):
            ids = cache.get(word)
            if ids is None:
                ids = self._remember(word, self._bpe_word(byte_encode(word)))
            out.extend(ids)
        return out

    def _remember(self, word: str, ids: tuple[int, ...]) -> tuple[int, ...]:
        if len(word) <= _CACHE_WORD:
            size = _ENTRY_BYTES + 4 * len(word) + 8 * len(ids)
            if self._cache_bytes + size > _CACHE_BYTES:
                self._cache.clear()
                self._cache_bytes = 0
            self._cache[word] = ids
            self._cache_bytes += size
        return ids

    def _bpe_word(self, word: str) -> tuple[int, ...]:
        """llm_tokenizer_bpe_session::tokenize for one pre-token: lowest-rank merge first, leftmost on ties."""
        vocab = self.token_to_id
        if self.pre.ignore_merges and word in vocab:
            return (vocab[word],)
        ranks = self.ranks
        out = []
        for piece in _merge(word, lambda a, b: _merge_rank(ranks, a, b)):
            tid = vocab.get(piece)
            if tid is not None:
                out.append(tid)
            else:  # llama.cpp looks each raw UTF-8 byte up as a one-byte token: only ASCII can hit
                out.extend(vocab[c] for c in piece if c < "\x80" and c in vocab)
        return tuple(out)

    def _spm(self, text: str) -> list[int]:
        out: list[int] = []
        cache = self._cache
        for seg in self._segment.split(text):
            ids = cache.get(seg)
            if ids is None:
                ids = self._remember(seg, self._spm_segment(seg))
            out.extend(ids)
        return out

    def _spm_segment(self, text: str) -> tuple[int, ...]:
        """llm_tokenizer_spm_session::tokenize: highest-score bigram first, leftmost on ties."""
        vocab, keys = self.token_to_id, self._merge_keys

        def priority(a: str, b: str):
            tid = vocab.get(a + b)
            return None if tid is None else keys[tid]

        out = []
        for piece in _merge(text, priority):
            tid = vocab.get(piece)
            if tid is not None:
                out.append(tid)
            else:   # an unknown character: its bytes (llama.cpp's rev_merge path only sees merged tokens);
                # a lone surrogate (no character; the API refuses it) as BPE's byte_encode writes it
                out.extend(self._byte_token(b) for b in piece.encode("utf-8", "surrogatepass"))
        return tuple(out)

    def _byte_token(self, b: int) -> int:
        tid = self.token_to_id.get(f"<0x{b:02X}>")
        if tid is None and b < 0x80:
            tid = self.token_to_id.get(chr(b))
        if tid is None:         # no byte fallback (llama.cpp would throw): SentencePiece's unknown token
            tid = self.unk_id
        if tid is None:
            raise TokenizerError(f"the vocabulary has no byte-fallback token <0x{b:02X}> and no unknown token")
        return tid

    # --- ids -> text -------------------------------------------------------------------------------
    def token_to_piece(self, tid: int, special: bool = True) -> bytes:
        """llama_token_to_piece(lstrip=0): the bytes one token stands for. Control and unknown tokens are
        empty unless `special`; UNUSED/UNDEFINED tokens are always empty."""
        key = (tid, special)
        piece = self._pieces.get(key)
        if piece is None:
            piece = self._pieces[key] = self._piece(tid, special)
        return piece

    def _piece(self, tid: int, special: bool) -> bytes:
        if not 0 <= tid < self.vocab_size:
            raise TokenizerError(f"token id {tid} is outside the vocabulary (0..{self.vocab_size - 1})")
        attr, text = int(self.attrs[tid]), self.tokens[tid]
        if attr & _CONTROL_OR_UNKNOWN:
            return text.encode() if special else b""
        if attr & _USER_DEFINED:
            return text.encode()
        if attr & _NORMAL:
            if not self.is_bpe:
                return text.replace(SPACE, " ").encode()
            out = bytearray()
            for c in text:
                b = CHAR_TO_BYTE.get(c)
                if b is None:                   # llama_decode_text's marker for a non-byte character
                    out += f"[UNK_BYTE_0x{c.encode().hex()}{text}]".encode()
                else:
                    out.append(b)
            return bytes(out)
        if attr & _BYTE:        # "<0xAB>"; llama.cpp's strtol reads anything else as far as it is hex
            digits = text[3:5]
            return bytes([int(digits, 16) if len(digits) == 2 and all(c in _HEX for c in digits) else 0])
        return b""

    def detokenize_bytes(self, ids, special: bool = True) -> bytes:
        """llama_detokenize(remove_special=false, unparse_special=special)."""
        parts = []
        for k, tid in enumerate(ids):
            piece = self.token_to_piece(int(tid), special)
            if k == 0 and self.add_space_prefix and piece.startswith(b" "):
                piece = piece[1:]                # the space prefix the SPM tokenizer added
            parts.append(piece)
        text = b"".join(parts)
        return _clean_spaces(text) if self.clean_spaces else text

    def detokenize(self, ids, special: bool = True) -> str:
        """Token ids -> text, special tokens rendered (bad UTF-8 becomes U+FFFD)."""
        return self.detokenize_bytes(ids, special).decode("utf-8", "replace")

    def is_eog(self, tid: int) -> bool:
        return tid in self.eog_ids


def _glue(tokens: list[str]) -> set[str]:
    """Every character that some token holds right before a U+2581 (not at the token's start).
    Vectorized (one join, one UTF-32 view): the per-token Python walk cost 0.04 s of every launch of
    a 262k-token vocabulary. Tokens holding a NUL (the separator) or a lone surrogate take the walk."""
    joined = "\x00".join(tokens)
    if joined.count("\x00") == len(tokens) - 1:
        try:
            chars = np.frombuffer(joined.encode("utf-32-le"), dtype=np.uint32)
        except UnicodeEncodeError:
            pass
        else:
            before = chars[:-1][chars[1:] == ord(SPACE)]
            return set(map(chr, before[before != 0].tolist()))
    return {t[k - 1] for t in tokens if SPACE in t for k in range(1, len(t)) if t[k] == SPACE}


def _merge_rank(ranks: dict[str, int], left: str, right: str) -> int | None:
    """Rank of the BPE merge (left, right), or None. Its line is `left + " " + right`, unless left
    has a space after its first character: llama.cpp cuts a line at that first space, so no line
    gives such a pair."""
    if left.find(" ", 1) >= 0:
        return None
    return ranks.get(left + " " + right)


def _merge(text: str, priority) -> list[str]:
    """The merge loop shared by llama.cpp's BPE and SPM sessions: start from single characters, then
    repeatedly join the adjacent pair with the smallest priority(left, right) (an int >= 0; None: never),
    leftmost first on ties, until no pair joins. A heap of candidate pairs, stale ones skipped on pop.

    A heap entry is one int, priority << 2b | left << b | length (b bits hold any position), which
    sorts as (priority, left) and costs a third of a tuple's memory on a 2 MB word. The pair's right
    symbol is nxt[left]; sizes only grow (or drop to 0), so an entry whose length no longer matches
    is stale for good."""
    n = len(text)
    if n < 2:
        return [text] if text else []
    bits = n.bit_length()
    mask, shift = (1 << bits) - 1, 2 * bits
    # symbol k is text[k:k + size[k]] (0 once merged away), between symbols prev[k] and nxt[k]; a long
    # word keeps them as machine ints (lists would hold an int object per position)
    ints = list if n < 4096 else lambda values: array("q", values)
    size = ints([1]) * n
    prev = ints(range(-1, n - 1))
    nxt = ints(range(1, n + 1))
    nxt[-1] = -1
    heap = []
    for k in range(1, n):
        p = priority(text[k - 1], text[k])
        if p is not None:
            heap.append(p << shift | (k - 1) << bits | 2)
    heapq.heapify(heap)
    push, pop = heapq.heappush, heapq.heappop
    while heap:
        key = pop(heap)
        left = key >> bits & mask
        size_left = size[left]
        right = nxt[left]
        if not size_left or right < 0 or size_left + size[right] != key & mask:
            continue                        # one side was merged since this pair was queued
        size_left += size[right]
        size[left] = size_left
        size[right] = 0
        after = nxt[left] = nxt[right]
        if after >= 0:
            prev[after] = left
            p = priority(text[left:left + size_left], text[after:after + size[after]])
            if p is not None:
                push(heap, p << shift | left << bits | size_left + size[after])
        before = prev[left]
        if before >= 0:
            p = priority(text[before:left], text[left:left + size_left])
            if p is not None:
                push(heap, p << shift | before << bits | size[before] + size_left)
    out, k = [], 0
    while k != -1:
        out.append(text[k:k + size[k]])
        k = nxt[k]
    return out


def _score_keys(scores: np.ndarray) -> list[int]:
    """float32 [vocab] SPM scores -> ints that sort as the scores descending (the merge priority; equal
    scores, 0.0 and -0.0 too, give equal keys): the IEEE bits of -score, flipped into unsigned order."""
    bits = (np.float32(0.0) - scores.astype(np.float32)).view(np.uint32)
    return np.where(bits >> 31, ~bits, bits | np.uint32(1 << 31)).astype(np.int64).tolist()


def _clean_spaces(text: bytes) -> bytes:
    """llama_detokenize's clean_up_tokenization_spaces, three in-place passes ported byte for byte."""
    buf = bytearray(text)
    if any(p in buf for p in (b" ?", b" !", b" .", b" ,")):      # " ?" -> "?" etc.
        total = 1 if buf else 0
        for i in range(1, len(buf)):
            x = buf[i]
            if buf[i - 1] == 0x20 and x in b"?!.,":
                total -= 1
            buf[total] = x
            total += 1
        del buf[total:]
    if b" ' " in buf:                                               # " ' " -> "'"
        total, n, i = (1 if buf else 0), len(buf), 1
        while i < n:
            x = buf[i]
            if x == 0x27 and i + 1 < n and buf[i - 1] == 0x20 and buf[i + 1] == 0x20:
                total -= 1
                i += 1
                buf[i] = 0
            buf[total] = x
            total += 1
            i += 1
        del buf[total:]
    if b" '" in buf:                                                # " 's" " 'm" " 're" " 've"
        total, n = (1 if buf else 0), len(buf)
        for i in range(1, n):
            x = buf[i]
            if buf[i - 1] == 0x20 and x == 0x27 and i + 1 < n:
                x1 = buf[i + 1]
                if x1 in b"sm":
                    total -= 1
                elif x1 not in b"td" and i + 2 < n and (buf[i + 1:i + 3] in (b"re", b"ve")):
                    total -= 1
            buf[total] = x
            total += 1
        del buf[total:]
    return bytes(buf)


class StreamDecoder:
    """Token ids in one at a time, text out only in whole UTF-8 characters.

    Pieces are concatenated as llama.cpp's generation loop prints them (token_to_piece, no space
    clean-up); an invalid byte sequence comes out as U+FFFD instead of blocking the stream.
    """

    def __init__(self, tokenizer: Tokenizer, special: bool = False):
        self.tokenizer = tokenizer
        self.special = special
        self._utf8 = codecs.getincrementaldecoder("utf-8")("replace")

    def feed(self, tid: int) -> str:
        return self._utf8.decode(self.tokenizer.token_to_piece(tid, self.special))

    def flush(self) -> str:
        """Whatever is held back (an unfinished character) as U+FFFD; the decoder starts afresh."""
        return self._utf8.decode(b"", final=True)
