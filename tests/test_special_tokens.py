"""Cutting special tokens out of text (runtime/special_tokens.py SpecialSplitter) and the tokenizer's
costs on hostile text: the fast splitter gives exactly llama.cpp's fragments (its literal algorithm,
`split_reference`, is the twin), in time linear in the text; the word cache is bounded in bytes.

Randomized, derandomized: CHATFILE_FUZZ_EXAMPLES (default 200) examples per generated class; the long
run is `CHATFILE_FUZZ_EXAMPLES=20000 .venv/bin/python -m pytest tests/test_special_tokens.py -q`.
Token-level identity with llama.cpp stays pinned by tests/test_tokenizer.py's goldens.
"""
from __future__ import annotations

import random
import subprocess
import sys
import time
from functools import lru_cache
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fuzz_helpers import fuzz_examples, fuzz_settings
from runtime.gguf import GGUFFile
from runtime.special_tokens import Attr, SpecialSplitter, split_reference
from runtime.tokenizer import Tokenizer

ROOT = Path(__file__).resolve().parent.parent
FUZZ_EXAMPLES = fuzz_examples(200)
FUZZ_SETTINGS = fuzz_settings(FUZZ_EXAMPLES)


@lru_cache(maxsize=None)
def _tokenizer(path: str) -> Tokenizer:
    return Tokenizer.from_metadata(GGUFFile(path).metadata)


@pytest.fixture(scope="module", params=["smollm2", "gemma3", "llama3", "llama2"])
def vocab(request) -> Tokenizer:
    if request.param in ("smollm2", "gemma3"):
        return _tokenizer(str(request.getfixturevalue(f"{request.param}_path")))
    return _tokenizer(str(ROOT / "data" / "vocab" / f"{request.param}-vocab.gguf"))


def _hostile_text(rng: random.Random, specials: list[str], pieces: int) -> str:
    """Special tokens, their heads and tails, whitespace runs and bits of markup, run together."""
    out = []
    for _ in range(pieces):
        t, r = rng.choice(specials), rng.random()
        if r < 0.35:
            out.append(t)
        elif r < 0.55:
            out.append(t[:rng.randint(1, len(t))])
        elif r < 0.7:
            out.append(t[rng.randint(0, len(t) - 1):])
        else:
            out.append(rng.choice([" ", "  ", "\n", "\n\n", "\t", " \n ", "a", "<", ">", "|", "x y", "<|", "\u2581"]))
    return "".join(out)


def test_same_fragments_as_llama_cpp_on_real_vocabularies(vocab):
    rng = random.Random(13)
    specials = [vocab.tokens[i] for i in vocab.special_ids]
    for _ in range(FUZZ_EXAMPLES):
        text = _hostile_text(rng, specials, rng.randint(1, 40))
        for parse_special in (True, False):
            want = split_reference(text, vocab.tokens, vocab.special_ids, vocab.attrs, parse_special)
            assert vocab._specials.split(text, parse_special) == want, (text, parse_special)


# A vocabulary of its own per example: overlapping special tokens over a small alphabet, every kind
# (control, user-defined, unknown, and normal ones that are not special), lstrip/rstrip at random.
_KINDS = [int(Attr.CONTROL), int(Attr.USER_DEFINED), int(Attr.UNKNOWN), int(Attr.NORMAL)]
_STRIPS = [0, int(Attr.LSTRIP), int(Attr.RSTRIP), int(Attr.LSTRIP | Attr.RSTRIP)]


@st.composite
def vocabulary_and_text(draw):
    alphabet = draw(st.sampled_from(["ab", "ab< \n", "a \t\n\u2581", "<|>ab", "aé漢 "]))
    tokens = draw(st.lists(st.text(alphabet, min_size=1, max_size=6), min_size=1, max_size=10, unique=True))
    attrs = [draw(st.sampled_from(_KINDS)) | draw(st.sampled_from(_STRIPS)) for _ in tokens]
    special = sorted((i for i, a in enumerate(attrs) if a & int(Attr.CONTROL | Attr.USER_DEFINED | Attr.UNKNOWN)),
                     key=lambda i: (-len(tokens[i].encode()), i))           # the tokenizer's order
    text = "".join(draw(st.lists(st.sampled_from(tokens + list(alphabet)), min_size=1, max_size=60)))
    return tokens, attrs, special, text


@FUZZ_SETTINGS
@given(vocabulary_and_text(), st.booleans())
def test_same_fragments_as_llama_cpp_on_generated_vocabularies(case, parse_special):
    tokens, attrs, special, text = case
    got = SpecialSplitter(tokens, special, attrs).split(text, parse_special)
    assert got == split_reference(text, tokens, special, attrs, parse_special)


def _cpu(tok: Tokenizer, text: str) -> float:
    best = float("inf")
    for _ in range(2):
        tok._cache.clear()
        t0 = time.process_time()
        tok.tokenize(text)
        best = min(best, time.process_time() - t0)
    return best


@pytest.mark.slow
def test_hostile_text_costs_about_what_plain_text_costs(smollm2_path, gemma3_path):
    """Special tokens repeated, Gemma's user-defined newline in every line, every special token of the
    vocabulary: no dearer than plain text of the same size (a few times at most, measured as CPU time);
    the quadratic splitting took 10 to 300 times as long."""
    plain = (ROOT / "README.md").read_text()
    for path, size, hostile in ((smollm2_path, 1_500_000, ["<|im_end|>", "<|im_start|>user\n", "<|im_start|"]),
                                (gemma3_path, 300_000, ["a\n", "<start_of_turn>", "x" + " " * 31, None])):
        tok = _tokenizer(str(path))
        budget = 3 * _cpu(tok, (plain * (size // len(plain) + 1))[:size]) + 0.25
        for unit in hostile:
            if unit is None:                # every special token, each once, then again
                unit = "".join(tok.tokens[i] + " x" for i in tok.special_ids)
            text = (unit * (size // len(unit) + 1))[:size]
            cost = _cpu(tok, text)
            assert cost < budget, (path.name, unit[:40], cost, budget)


def test_word_cache_is_bounded_in_bytes(smollm2_path, monkeypatch):
    """Long words are tokenized but not cached; distinct short ones never take the cache past its
    budget (here shrunk to 256 kB so that a few thousand words cross it)."""
    from runtime import tokenizer as t
    monkeypatch.setattr(t, "_CACHE_BYTES", 256 << 10)
    tok = Tokenizer.from_metadata(GGUFFile(smollm2_path).metadata)
    rng = random.Random(5)
    word = "".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=50_000))
    assert tok.tokenize(word, add_special=False) and word not in tok._cache
    peak = 0
    for chunk in range(10):
        tok.tokenize(" ".join("".join(rng.choices("abcdefghij", k=rng.randint(4, 60))) for _ in range(300)))
        peak = max(peak, tok._cache_bytes)
        held = sum(t._ENTRY_BYTES + 4 * len(w) + 8 * len(ids) for w, ids in tok._cache.items())
        assert held == tok._cache_bytes <= t._CACHE_BYTES
    assert peak > t._CACHE_BYTES // 2                    # it did fill up, and started afresh


_RSS_SCRIPT = """
import random, string, sys
from runtime.gguf import GGUFFile
from runtime.tokenizer import Tokenizer
tok = Tokenizer.from_metadata(GGUFFile(sys.argv[1]).metadata)
rng, rss = random.Random(0), []
for _ in range(4):
    tok.tokenize("".join(rng.choices(string.ascii_letters, k=400_000)), add_special=False)
    rss.append(int(open("/proc/self/statm").read().split()[1]) * 4096 >> 20)
print(rss[0], rss[-1])
"""


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")
def test_resident_memory_stays_flat_over_huge_words(smollm2_path):
    """Four different 400,000-character words, as four /tokenize requests would send them: resident
    memory after the fourth is what it was after the first (the old entry-count cache kept every one)."""
    r = subprocess.run([sys.executable, "-c", _RSS_SCRIPT, str(smollm2_path)], capture_output=True, text=True,
                       cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr
    first, last = map(int, r.stdout.split())
    assert last - first < 10, (first, last)
