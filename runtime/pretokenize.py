"""BPE pre-tokenizers: the regex splits llama.cpp applies before byte-level BPE, by `tokenizer.ggml.pre`.

llama.cpp (src/unicode.cpp `unicode_regex_split`) does not run these regexes on the text itself. It
"collapses" every codepoint to one byte: ASCII stays as is, non-ASCII whitespace becomes \\x0B, and any
other non-ASCII codepoint becomes a byte standing for its Unicode category (\\xD1 number, \\xD2 letter,
\\xD3 punctuation, \\xD4 mark, \\xD5 symbol, \\xD0 anything else). `\\p{N}` in a regex then becomes
`[\\xD10-9]`, and so on, and C++ `std::regex` (ECMAScript, ASCII `\\s`) runs on the collapsed bytes.
We do exactly the same with Python's `re` in ASCII mode, so category edge cases (`\\s`, digits,
marks) fall where llama.cpp puts them. The GPT-2 and Llama 3 regexes have hand-written splitters in
llama.cpp (`unicode_regex_split_custom_gpt2/llama3`); they produce the same words as the regex on
the collapsed text, which is what runs here.

Categories come from Python's `unicodedata` (Unicode 14 on Python 3.11); llama.cpp's table is Unicode
15.x, so only letters/digits assigned after Unicode 14 can split differently.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

# The White_Space property (llama.cpp unicode-data.cpp `unicode_set_whitespace`).
WHITESPACE = frozenset([*range(0x09, 0x0E), 0x20, 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B),
                        0x2028, 0x2029, 0x202F, 0x205F, 0x3000])

# collapsed byte for each Unicode category class (llama.cpp `k_ucat_cpt`)
_CATEGORY_BYTE = {"N": "\xd1", "L": "\xd2", "P": "\xd3", "M": "\xd4", "S": "\xd5"}
_OTHER_BYTE = "\xd0"
_SPACE_BYTE = "\x0b"

# What `\p{X}` becomes inside a collapsed regex (llama.cpp `k_ucat_map`): the category byte plus the
# ASCII members of the category.
_CATEGORY_CLASS = {
    "N": "\xd1" + "0-9",
    "L": "\xd2" + "A-Za-z",
    "P": "\xd3" + r"!-#%-*,-/:-;?-@\[-\]_\{\}",
    "M": "\xd4",
    "S": "\xd5" + r"\$\+<->\^`\|",
}
_UCAT = re.compile(r"\\p\{(N|L|P|M|S|Lu|Ll|Lt|Lm|Lo)\}")


class _Collapse(dict):
    """str.translate table: codepoint -> collapsed character, filled in on first sight."""

    def __init__(self, keep_categories: bool):
        super().__init__()
        self.keep_categories = keep_categories

    def __missing__(self, cpt: int) -> str:
        if cpt < 128:
            out = chr(cpt)
        elif cpt in WHITESPACE:
            out = _SPACE_BYTE
        elif not self.keep_categories:
            out = chr(cpt)
        else:
            out = _CATEGORY_BYTE.get(unicodedata.category(chr(cpt))[0], _OTHER_BYTE)
        self[cpt] = out
        return out


_COLLAPSED = _Collapse(keep_categories=True)     # for regexes that use \p{...}
_WIDE = _Collapse(keep_categories=False)         # for the others (llama.cpp's std::wregex path)


def collapse_regex(expr: str) -> str:
    """llama.cpp's regex rewrite: each \\p{X} becomes its collapsed class (bracketed unless inside [])."""
    out, inside, i = [], False, 0
    while i < len(expr):
        c = expr[i]
        if c == "[" and (i == 0 or expr[i - 1] != "\\"):
            inside = True
        elif c == "]" and inside and expr[i - 1] != "\\":
            inside = False
        m = _UCAT.match(expr, i)
        if m:
            cls = _CATEGORY_CLASS[m.group(1)[0]]     # \p{Lu} etc. all collapse to LETTER
            out.append(cls if inside else f"[{cls}]")
            i = m.end()
            continue
        out.append(c)
        i += 1
    return "".join(out)


@dataclass(frozen=True)
class PreTokenizer:
    """One `tokenizer.ggml.pre` family: its regexes (applied in order) and the vocab flags it sets."""
    regexes: tuple[str, ...]
    clean_spaces: bool = True     # detokenizer removes spaces before punctuation (llama.cpp default)
    ignore_merges: bool = False   # a whole pre-token that is in the vocabulary is one token
    add_bos: bool = False         # default for tokenizer.ggml.add_bos_token when absent

    def split(self, text: str) -> list[str]:
        """text -> its pre-tokens (words), in order, covering the text exactly."""
        pieces = [(0, len(text))]
        collapsed = wide = None
        for expr, pattern in _compiled(self.regexes):
            if _UCAT.search(expr):
                collapsed = collapsed if collapsed is not None else text.translate(_COLLAPSED)
                subject = collapsed
            else:
                wide = wide if wide is not None else text.translate(_WIDE)
                subject = wide
            pieces = _split_pieces(pattern, subject, pieces)
        return [text[a:b] for a, b in pieces]


def _split_pieces(pattern: re.Pattern, subject: str, pieces: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """llama.cpp `unicode_regex_split_stl`: each piece splits into its matches and the gaps between."""
    out = []
    for start, end in pieces:
        at = start
        for m in pattern.finditer(subject, start, end):
            a, b = m.span()
            if a > at:
                out.append((at, a))
            if b > a:
                out.append((a, b))
            at = max(at, b)
        if at < end:
            out.append((at, end))
    return out


_PATTERNS: dict[tuple[str, ...], list[tuple[str, re.Pattern]]] = {}


def _compiled(regexes: tuple[str, ...]) -> list[tuple[str, re.Pattern]]:
    if regexes not in _PATTERNS:
        _PATTERNS[regexes] = [(e, re.compile(collapse_regex(e) if _UCAT.search(e) else e, re.ASCII))
                              for e in regexes]
    return _PATTERNS[regexes]


# --- the regexes, verbatim from llama.cpp src/llama-vocab.cpp (llm_tokenizer_bpe) -------------------
# GPT-2's regex plus a final `|\s+`: llama.cpp's custom splitter for it (and the gap rule of the
# generic path) gives a lone whitespace before a non-space its own word either way.
GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
# Llama 3 (tiktoken cl100k style), case-insensitive contractions spelled out as llama.cpp adapts them.
LLAMA3 = (r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|"
          r"\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2 = (r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|"
         r"\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN35 = (r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|"
          r"\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
TEKKEN = (r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+|"
          r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*|"
          r"\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_CONTRACTIONS_CI = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
GPT4O = (r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+" + _CONTRACTIONS_CI + "?|"
         r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*" + _CONTRACTIONS_CI + "?|"
         r"\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")

_DEFAULT = PreTokenizer((r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", "[0-9][0-9][0-9]"))
_LLAMA3 = PreTokenizer((LLAMA3,), ignore_merges=True, add_bos=True)
_GPT2 = PreTokenizer((GPT2,))
_STARCODER = PreTokenizer((r"\p{N}", GPT2))
_QWEN2 = PreTokenizer((QWEN2,), clean_spaces=False)

# tokenizer.ggml.pre -> pre-tokenizer, grouped as llama.cpp's llama_vocab::impl::load groups them
PRE_TOKENIZERS: dict[str, PreTokenizer] = {
    "default": _DEFAULT,
    **dict.fromkeys(["llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0",
                     "lfm2", "jina-v5-nano"], _LLAMA3),
    "dbrx": PreTokenizer((LLAMA3,)),
    "smaug-bpe": PreTokenizer((LLAMA3,)),
    "falcon": PreTokenizer((r"[\p{P}\$\+<=>\^~\|`]+", GPT2, "[0-9][0-9][0-9]")),
    **dict.fromkeys(["gpt-2", "phi-2", "jina-es", "jina-de", "gigachat", "jina-v2-es", "jina-v2-de",
                     "a.x-4.0", "mellum", "modern-bert", "exaone4", "mpt", "olmo", "jais"], _GPT2),
    **dict.fromkeys(["trillion", "granite-docling"], PreTokenizer((GPT2,), clean_spaces=False)),
    **dict.fromkeys(["starcoder", "refact", "codeshell", "exaone", "minerva-7b", "mellum2"], _STARCODER),
    **dict.fromkeys(["smollm", "command-r"], PreTokenizer((r"\p{N}", GPT2), clean_spaces=False)),
    **dict.fromkeys(["qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "hunyuan", "solar-open"], _QWEN2),
    "megrez": PreTokenizer((QWEN2,)),
    "stablelm2": PreTokenizer((QWEN2,)),
    "qwen35": PreTokenizer((QWEN35,), clean_spaces=False),
    **dict.fromkeys(["glm4", "chatglm-bpe"], PreTokenizer((LLAMA3,))),
    "tekken": PreTokenizer((TEKKEN,), clean_spaces=False, ignore_merges=True, add_bos=True),
    **dict.fromkeys(["gpt-4o", "llama4", "kanana2", "talkie"], PreTokenizer((GPT4O,), clean_spaces=False)),
    "poro-chat": PreTokenizer((r" ?[^(\s|.,!?…。，、।۔،)]+",), clean_spaces=False),
    **dict.fromkeys(["bloom", "gpt3-finnish"], PreTokenizer((r" ?[^(\s|.,!?…。，、।۔،)]+",))),
    "viking": PreTokenizer((r" ?[^(\s|.,!?…。，、।۔،)]+", r"\p{N}"), clean_spaces=False),
}
# pre-tokenizers whose vocab has no BOS by default (llama.cpp sets special_bos_id = NULL for them)
NO_DEFAULT_BOS = frozenset({"glm4", "chatglm-bpe"})


# --- GPT-2 byte-level encoding (llama.cpp unicode.cpp unicode_byte_to_utf8_map) -----------------------
def _byte_to_char() -> list[str]:
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    table, n = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + n)
            n += 1
    return [table[b] for b in range(256)]


BYTE_TO_CHAR = _byte_to_char()
CHAR_TO_BYTE = {c: b for b, c in enumerate(BYTE_TO_CHAR)}
_LATIN1_TO_BYTECHAR = {b: c for b, c in enumerate(BYTE_TO_CHAR)}


def byte_encode(word: str) -> str:
    """A pre-token's UTF-8 bytes, each shown as its GPT-2 byte character (' ' -> 'Ġ')."""
    return word.encode("utf-8", "surrogatepass").decode("latin-1").translate(_LATIN1_TO_BYTECHAR)
