#!/usr/bin/env python3
"""Record llama.cpp's tokenization of a hard corpus as golden data for tests/test_tokenizer.py.

How to regenerate (needs llama-cpp-python==0.3.36; CI never runs this):

    /work/llcpp/bin/python scripts/make_token_goldens.py smollm2 gemma3 llama3 llama2 \
        qwen3 phi4mini phi3 mistral tekken gemma2 variants
        # -> data/goldens/tokens_<model>.json, data/goldens/tokens_variants.json

smollm2 and gemma3 are the real models (scripts/fetch_models.py); llama3, llama2, qwen3 (pre qwen2),
phi4mini (pre gpt-4o), phi3 (SentencePiece with Phi-3's tokens), mistral (Mistral 7B v0.3's
SentencePiece), tekken (Mistral Nemo's, pre tekken) and gemma2 (Gemma 2's SentencePiece) are GGUFs carrying real vocabularies, written
by scripts/make_vocab_models.py into data/vocab/.
Only the vocabulary is loaded (`Llama(vocab_only=True)`).

`variants` covers metadata the two vocab models do not exercise: the pre-tokenizer table (the Llama 3
vocabulary, merges included, re-labelled with other `tokenizer.ggml.pre` values) and the add_eos /
add_bos / add_space_prefix flags. (llama.cpp's name-based strip rules cannot be covered this way: its
Phi-3 rule needs <|endoftext|>, </s>, <s> and <unk> all in the vocabulary, or the load fails.) Each variant is a metadata-only copy of a data/vocab GGUF with some keys
changed; the JSON holds llama.cpp's ids for every corpus text (default flags) and the detokenization
of the joined text (the clean-up of spaces differs per pre-tokenizer).

For every corpus text the JSON holds llama.cpp's ids for the four (add_special, parse_special)
combinations, and `llama_detokenize(remove_special=false, unparse_special=true/false)` of the default
(True, True) ids, as hex bytes (a detokenization can hold broken UTF-8) and as text. The `vocab`
section holds llama.cpp's view of the vocabulary: BOS/EOS/EOT ids, add_bos/add_eos, every EOG id,
every token whose attributes are not plain NORMAL (as [id, llama_token_attr]), and the pieces of a
fixed sample of tokens.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import random
import sys
from pathlib import Path

import gguf
import llama_cpp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import fetch_models  # noqa: E402

VOCAB_MODELS = {name: ROOT / "data" / "vocab" / f"{name}-vocab.gguf"
                for name in ("llama3", "llama2", "qwen3", "phi4mini", "phi3", "mistral", "tekken",
                             "gemma2")}
FLAGS = {"special+parse": (True, True), "special": (True, False),
         "parse": (False, True), "plain": (False, False)}
ATTR_NORMAL = 1 << 2

CODE_PY = '''def fibonacci(n: int) -> int:
    """Return the n-th Fibonacci number."""
    if n < 2:
        return n
    a, b = 0, 1
    for _ in range(n - 1):
        a, b = b, a + b  # tuple swap
    return b


print(f"{fibonacci(30):,}")
'''
CODE_C = '''#include <stdio.h>

int main(int argc, char **argv) {
\tfor (int i = 0; i < argc; ++i) {
\t\tprintf("%d: %s\\n", i, argv[i]);
\t}
\treturn 0;
}
'''
CODE_JS = "const add = (a, b) => a + b;\nconsole.log(`sum=${add(1, 2)}`); // => 3\nlet x = [1,2,3].map(v=>v**2);\n"
CODE_RUST = "fn main() {\n    let v: Vec<u32> = (0..10).filter(|x| x % 2 == 0).collect();\n    println!(\"{:?}\", v);\n}\n"
CODE_HTML = '<!DOCTYPE html>\n<html lang="en">\n  <body>\n    <table><tr><td>x</td></tr></table>\n    <b>bold</b> <i>it</i>\n  </body>\n</html>\n'
CODE_JSON = '{"name": "chatfile", "version": [0, 1, 0], "nested": {"a": null, "b": true, "c": -1.5e-3}}'
CODE_SHELL = "#!/bin/sh\nset -eu\nfor f in *.gguf; do echo \"$f\" | tr 'a-z' 'A-Z' >> out.txt; done\n"
CODE_SQL = "SELECT id, COUNT(*) AS n\r\nFROM tokens\r\nWHERE text LIKE '%<s>%'\r\nGROUP BY id HAVING n > 10;\r\n"

CORPUS: list[tuple[str, str]] = [
    ("empty", ""),
    ("prose", "The quick brown fox jumps over the lazy dog. It was the best of times, it was the worst "
              "of times; it was the age of wisdom, it was the age of foolishness..."),
    ("contractions", "I'm sure you're right, they've said he'll come and she'd know. It's DON'T, We'Re, "
                     "I'M, YOU'LL, can't, won't; rock 'n' roll, the '90s, 'quoted' and don’t."),
    ("cleanup", "Hello , world ! Is it ? Yes . It ' s John ' s and they 're 've 'll 'd 't 'm end ."),
    ("code_python", CODE_PY),
    ("code_c", CODE_C),
    ("code_js", CODE_JS),
    ("code_rust", CODE_RUST),
    ("code_html", CODE_HTML),
    ("code_json", CODE_JSON),
    ("code_shell", CODE_SHELL),
    ("code_sql_crlf", CODE_SQL),
    ("space_runs", "a b  c   d    e     f      g       h        i"),
    ("space_long", "x" + " " * 40 + "y" + " " * 70 + "z"),
    ("leading_trailing", "  hello world  "),
    ("leading_space", " Hello"),
    ("trailing_space", "Hello "),
    ("only_spaces", "     "),
    ("tabs", "\tone\n\t\ttwo\n\t\t\tthree\t \t mixed\t"),
    ("tabs_long", "\t" * 35 + "deep"),
    ("newlines", "a\nb\n\nc\n\n\nd\n\n\n\ne"),
    ("newlines_long", "start" + "\n" * 35 + "end"),
    ("newline_spaces", "line \n  next\n \n\t\nlast"),
    ("crlf", "first\r\nsecond\r\n\r\nthird\rfourth\n\r"),
    ("digits", "3.14159265358979323846 1234567890123 0000 007 1,000,000 1e-10 0x1F 2024-06-01"),
    ("digits_long", "12345678901234567890123456789012345678901234567890"),
    ("digits_unicode", "fullwidth １２３ roman Ⅻ fraction ½ ¾ arabic ٣٤٥ devanagari १२३ superscript x²³"),
    ("punct_runs", "!!!???... ----- ===== ==> <== ((([[[{{{ }}}]]])) \"'` ... —–- ~~~ ***"),
    ("punct_unicode", "«guillemets» „German“ “curly” ‘single’ ¿Qué? ¡Olé! … • · ※ § ¶"),
    ("accents", "Café naïve résumé façade Ærøskøbing Œuvre Ångström São Paulo Łódź İstanbul ß"),
    ("combining", "e\u0301 a\u0308\u0304 n\u0303 Z\u0324\u0354\u0367\u0311\u0313a\u0308\u0356\u032d\u0308\u0307"
                  "l\u036e\u0312\u036bg\u030c\u0317\u035ao\u0319\u0314\u036e\u0307\u0350\u0307"),
    ("cyrillic", "Привет, мир! Съешь же ещё этих мягких французских булок, да выпей чаю."),
    ("greek", "Ελληνικά: Καλημέρα κόσμε, ΑΒΓΔ αβγδ ΆΈΉ ϊΰ."),
    ("chinese", "你好，世界！我爱自然语言处理。今天天气很好。"),
    ("japanese", "こんにちは、世界。カタカナとひらがな、漢字を混ぜた文章です。ｶﾀｶﾅ"),
    ("korean", "안녕하세요 세계, 한국어 문장입니다."),
    ("arabic", "مرحبا بالعالم، هذا اختبار للترميز. العدد ١٢٣."),
    ("hebrew", "שלום עולם, זהו מבחן."),
    ("devanagari", "नमस्ते दुनिया, यह एक परीक्षण है। क्षत्रिय"),
    ("thai", "สวัสดีชาวโลก ภาษาไทยไม่มีช่องว่าง"),
    ("mixed_scripts", "abcДЕЖ123中文αβγ😀xyz"),
    ("emoji", "👍 👍🏽 👍🏿 👨‍👩‍👧‍👦 🏳️‍🌈 ❤️ ❤ 🇫🇷🇯🇵 🦙🔥 😀😃😄 ☺️ 🧑🏽‍💻"),
    ("emoji_text", "I love 🍕 and 🍣!🎉 Great job👏👏"),
    ("zero_width", "zero\u200bwidth join\u200dner non\u200cjoiner word\u2060joiner \ufeffBOM soft\u00adhyphen"),
    ("unicode_spaces", "no\u00a0break narrow\u202fnbsp em\u2003space ideographic\u3000space "
                       "line\u2028sep para\u2029sep nel\u0085x ogham\u1680y"),
    ("controls", "bell\x07 esc\x1b[31mred\x1b[0m nul\x00x fs\x1c\x1d\x1e\x1f del\x7f c1\x80\x9f"),
    ("private_unassigned", "pua\ue000 \U000f0000 unassigned\u0378 nonchar\ufffe replacement\ufffd"),
    ("url_email", "See https://example.com/path/to?q=1&r=two#frag or mail user.name+tag@example.org."),
    ("math", "∑_{i=1}^{n} x_i² ≤ ∞, ∀x∈ℝ: √(x²)=|x| ⇒ ∂f/∂x ≈ 0.5·π"),
    ("repeated", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa hahahahahahahahahahaha"),
    ("long_word", "Pneumonoultramicroscopicsilicovolcanoconiosis " + "=" * 120 + " " + "ab" * 150),
    ("base64", "aGVsbG8gd29ybGQhIFRoaXMgaXMgYSBsb25nIGJhc2U2NCBzdHJpbmcgZm9yIHRva2VuaXplciB0ZXN0aW5nLg=="),
    ("chatml", "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n"
               "<|im_start|>assistant\n"),
    ("chatml_spaced", " <|im_end|> <|im_start|>  <|endoftext|>x<|im_end|><|im_end|>"),
    ("chatml_partial", "<|im_ <|im_start| <im_start> <|IM_START|>"),
    ("gemma_turns", "<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n4<end_of_turn>\n"),
    ("gemma_specials", "<bos>text<eos> <pad><unk><mask> <unused0><unused99> <start_of_image>"),
    ("llama_specials", "<s>[INST] hi [/INST]</s> <|begin_of_text|><|start_header_id|>user<|end_header_id|>"
                       "\n\nhello<|eot_id|><|eom_id|><|reserved_special_token_0|>"),
    ("fim_tokens", "<fim_prefix>def f(<fim_suffix>)<fim_middle> <reponame>x<file_sep>y <filename>"),
    ("html_tags", "<table><tr><th>h</th><td>d</td></tr></table><h1>T</h1><s>strike</s><code>c</code>"),
    ("byte_tokens_text", "<0x41><0x0A> <0xFF>"),
    ("single_space", " "),
    ("single_letter", "a"),
    ("single_newline", "\n"),
    ("single_tab", "\t"),
    ("single_accent", "é"),
    ("single_cjk", "中"),
    ("single_emoji", "🦙"),
    ("single_apostrophe", "'"),
    ("single_digit", "0"),
    ("single_special_text", "<|im_end|>"),
]


def corpus() -> list[tuple[str, str]]:
    """The corpus plus one long text made of all of it (to cover cache effects across calls)."""
    return CORPUS + [("all_joined", "\n".join(text for _, text in CORPUS))]


def detokenize(vocab, ids: list[int], special: bool) -> bytes:
    arr = (llama_cpp.llama_token * max(len(ids), 1))(*ids)
    size = 64 + 8 * len(ids)
    while True:
        buf = ctypes.create_string_buffer(size)
        n = llama_cpp.llama_detokenize(vocab, arr, len(ids), buf, size, False, special)
        if n >= 0:
            return buf.raw[:n]
        size = -n + 16


def piece(vocab, tid: int, special: bool) -> bytes:
    buf = ctypes.create_string_buffer(256)
    n = llama_cpp.llama_token_to_piece(vocab, tid, buf, 256, 0, special)
    assert n >= 0, (tid, n)
    return buf.raw[:n]


def model_path(name: str) -> Path:
    if name in VOCAB_MODELS:
        return VOCAB_MODELS[name]
    return fetch_models.model_path(name)


def record(name: str) -> dict:
    path = model_path(name)
    llm = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    n = llama_cpp.llama_vocab_n_tokens(vocab)
    null = lambda t: None if t < 0 else int(t)  # noqa: E731  (LLAMA_TOKEN_NULL is -1)
    attrs = [int(llama_cpp.llama_vocab_get_attr(vocab, i)) for i in range(n)]
    rng = random.Random(1234)
    sample = sorted(set(rng.sample(range(n), min(n, 3000))) | {i for i in range(n) if attrs[i] != ATTR_NORMAL})
    info = {
        "n_tokens": n,
        "bos": null(llama_cpp.llama_vocab_bos(vocab)),
        "eos": null(llama_cpp.llama_vocab_eos(vocab)),
        "eot": null(llama_cpp.llama_vocab_eot(vocab)),
        "add_bos": bool(llama_cpp.llama_vocab_get_add_bos(vocab)),
        "add_eos": bool(llama_cpp.llama_vocab_get_add_eos(vocab)),
        "eog": [i for i in range(n) if llama_cpp.llama_vocab_is_eog(vocab, i)],
        "attrs": [[i, a] for i, a in enumerate(attrs) if a != ATTR_NORMAL],
        "pieces": [[i, piece(vocab, i, True).hex(), piece(vocab, i, False).hex()] for i in sample],
    }
    cases = []
    for case, text in corpus():
        ids = {key: llm.tokenize(text.encode("utf-8"), add_bos=add, special=parse)
               for key, (add, parse) in FLAGS.items()}
        default = ids["special+parse"]
        detok = detokenize(vocab, default, True)
        cases.append({
            "name": case, "text": text, "ids": ids,
            "detok_hex": detok.hex(),
            "detok_plain_hex": detokenize(vocab, default, False).hex(),
            "detok": detok.decode("utf-8", "replace"),
            # llama.cpp's own round trip, without the BOS/EOS it adds
            "round_trip": detokenize(vocab, ids["parse"], True) == text.encode("utf-8"),
        })
    return {"model": name, "file": path.name, "llama_cpp_python": llama_cpp.__version__,
            "vocab": info, "cases": cases}


# tokenizer.ggml.pre values checked on the Llama 3 vocabulary, one per regex family in llama-vocab.cpp
PRE_VARIANTS = ["default", "gpt-2", "starcoder", "smollm", "qwen2", "qwen35", "stablelm2", "falcon", "tekken",
                "gpt-4o", "dbrx", "chatglm-bpe", "bloom", "poro-chat", "viking", "trillion", "command-r"]
# label -> (vocab model, metadata keys changed)
VARIANTS = {
    **{f"pre={pre}": ("llama3", {"tokenizer.ggml.pre": pre}) for pre in PRE_VARIANTS},
    "add_eos,no_space_prefix": ("llama2", {"tokenizer.ggml.add_eos_token": True,
                                           "tokenizer.ggml.add_space_prefix": False}),
    "bpe_add_eos,no_bos": ("llama3", {"tokenizer.ggml.add_eos_token": True,
                                      "tokenizer.ggml.add_bos_token": False}),
}


def read_fields(src: Path) -> dict:
    """key -> (value, value type, array element type) of every metadata field."""
    reader = gguf.GGUFReader(str(src))
    return {key: (field.contents(), field.types[0],
                  field.types[1] if field.types[0] == gguf.GGUFValueType.ARRAY else None)
            for key, field in reader.fields.items() if not key.startswith("GGUF.")}


def relabelled(fields: dict, changes: dict, dst: Path) -> None:
    """A metadata-only copy of fields with some keys changed (vocab_only loading needs no tensors)."""
    assert changes.keys() <= fields.keys(), "a changed key must exist in the source"
    writer = gguf.GGUFWriter(str(dst), arch=fields["general.architecture"][0])
    for key, (value, vtype, sub) in fields.items():
        if key != "general.architecture":
            writer.add_key_value(key, changes.get(key, value), vtype, sub_type=sub)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()


def record_variants() -> dict:
    import tempfile
    out = {"model": "variants", "llama_cpp_python": llama_cpp.__version__, "variants": {}}
    texts = corpus()
    fields = {base: read_fields(VOCAB_MODELS[base]) for base in {base for base, _ in VARIANTS.values()}}
    with tempfile.TemporaryDirectory() as tmp:
        for k, (label, (base, changes)) in enumerate(VARIANTS.items()):
            path = Path(tmp) / f"variant{k}.gguf"
            relabelled(fields[base], changes, path)
            llm = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
            vocab = llama_cpp.llama_model_get_vocab(llm.model)
            ids = {name: llm.tokenize(text.encode("utf-8"), add_bos=True, special=True) for name, text in texts}
            out["variants"][label] = {"file": VOCAB_MODELS[base].name, "changes": changes, "ids": ids,
                                      "joined_detok_hex": detokenize(vocab, ids["all_joined"], True).hex()}
            del llm
    return out


def dump(data: dict) -> str:
    """JSON with one line per case and per vocab field, so a changed golden diffs readably."""
    compact = dict(ensure_ascii=False, separators=(",", ":"))
    head = {k: v for k, v in data.items() if k not in ("vocab", "cases")}
    lines = [json.dumps(head, **compact)[:-1] + ',"vocab":{']
    lines += [",\n".join(f"{json.dumps(k)}:{json.dumps(v, **compact)}" for k, v in data["vocab"].items())]
    lines += ['},"cases":[', ",\n".join(json.dumps(c, **compact) for c in data["cases"]), "]}"]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", choices=["smollm2", "gemma3", *VOCAB_MODELS, "variants"])
    args = ap.parse_args()
    for name in args.models:
        if name == "variants":
            data = record_variants()
            out = ROOT / "data" / "goldens" / "tokens_variants.json"
            compact = dict(ensure_ascii=False, separators=(",", ":"))
            head = json.dumps({k: v for k, v in data.items() if k != "variants"}, **compact)[:-1]
            body = ",\n".join(f"{json.dumps(k)}:{json.dumps(v, **compact)}" for k, v in data["variants"].items())
            out.write_text(head + ',"variants":{\n' + body + "}}\n", encoding="utf-8")
            print(f"{out.relative_to(ROOT)}: {len(data['variants'])} variants")
            continue
        data = record(name)
        out = ROOT / "data" / "goldens" / f"tokens_{name}.json"
        out.write_text(dump(data), encoding="utf-8")
        n_ids = sum(len(c["ids"]["special+parse"]) for c in data["cases"])
        print(f"{out.relative_to(ROOT)}: {len(data['cases'])} texts, {n_ids} ids (default flags), "
              f"eog {data['vocab']['eog']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
