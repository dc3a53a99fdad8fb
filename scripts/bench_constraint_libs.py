#!/usr/bin/env python3
"""Compare constrained-decoding libraries on our real vocabularies (the measurements behind choosing
llguidance; docs/CONSTRAINTS.md has the results).

    .venv/bin/pip install outlines-core      # not a chatfile dependency: only for this comparison
    .venv/bin/python scripts/bench_constraint_libs.py [--models smollm2 gemma3]

Per library and model: the time to build its view of the vocabulary, to compile a small object schema
and "any JSON object", and the time to compute one token's allowed-token mask while walking a fixed
JSON text token by token (median and worst). Also the installed size of each package. A library that
is not installed is skipped (xgrammar imports torch at start-up, which a single-file executable
cannot carry, so it is not measured here).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "scripts"))

import fetch_models  # noqa: E402
import runtime  # noqa: E402
from runtime.special_tokens import Attr  # noqa: E402

SMALL = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"},
                                          "tags": {"type": "array", "items": {"type": "string"}}},
         "required": ["name", "age", "tags"]}
ANY_OBJECT = {"type": "object"}
TEXT = '{"name": "Alice", "age": 30, "tags": ["a", "b"]}'


def package_mb(name: str) -> float:
    spec = importlib.util.find_spec(name)
    root = os.path.dirname(spec.origin)
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(root) for f in fs) / 1e6


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def walk(ids, mask_fn, advance_fn):
    times = []
    for t in ids:
        t0 = time.perf_counter()
        mask_fn()
        times.append(time.perf_counter() - t0)
        advance_fn(t)
    return statistics.median(times) * 1e3, max(times) * 1e3


def bench_llguidance(model, ids):
    import llguidance
    from runtime.constraint import Spec, compile_spec, vocabulary
    vocab, t_vocab = timed(lambda: vocabulary(model.tokenizer, model.config.vocab_size))
    out = {"vocabulary_s": t_vocab}
    for label, schema in (("small", SMALL), ("any_object", ANY_OBJECT)):
        c, t = timed(lambda: compile_spec(Spec("json_schema", schema, "x"), vocab))
        out[f"compile_{label}_ms"] = t * 1e3
        state = c.start()
        if label == "small":
            out["mask_median_ms"], out["mask_max_ms"] = walk(ids, lambda: state.mask(model.config.vocab_size),
                                                             state.advance)
    out["package_mb"] = package_mb("llguidance")
    out["version"] = llguidance.__version__
    return out


def bench_outlines(model, ids):
    import outlines_core
    from outlines_core.json_schema import build_regex_from_schema
    tok = model.tokenizer

    def vocabulary():
        pieces: dict[bytes, list[int]] = {}
        for i in range(tok.vocab_size):
            if int(tok.attrs[i]) & int(Attr.CONTROL | Attr.UNKNOWN) or i in tok.eog_ids:
                continue
            piece = tok.token_to_piece(i, special=True)
            if piece:
                pieces.setdefault(piece, []).append(i)
        return outlines_core.Vocabulary(tok.eos_id, pieces)
    vocab, t_vocab = timed(vocabulary)
    out = {"vocabulary_s": t_vocab}
    bits = np.zeros((model.config.vocab_size + 31) // 32, dtype=np.int32)
    for label, schema in (("small", SMALL), ("any_object", ANY_OBJECT)):
        regex = build_regex_from_schema(json.dumps(schema))
        index, t = timed(lambda: outlines_core.Index(regex, vocab))
        out[f"compile_{label}_ms"] = t * 1e3
        if label == "small":
            guide = outlines_core.Guide(index)
            out["mask_median_ms"], out["mask_max_ms"] = walk(
                ids, lambda: guide.write_mask_into(bits.ctypes.data, bits.size, 4), guide.advance)
    out["package_mb"] = package_mb("outlines_core")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=["smollm2", "gemma3"])
    args = ap.parse_args()
    libraries = [(name, fn) for name, fn in (("llguidance", bench_llguidance), ("outlines_core", bench_outlines))
                 if importlib.util.find_spec(name) is not None]
    for model_name in args.models:
        model = runtime.load(fetch_models.model_path(model_name))
        ids = model.tokenize(TEXT, add_special=False, parse_special=False)
        for lib, fn in libraries:
            result = fn(model, ids)
            print(f"{model_name} (vocab {model.config.vocab_size}) {lib}: " +
                  ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in result.items()))


if __name__ == "__main__":
    main()
