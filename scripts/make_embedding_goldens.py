#!/usr/bin/env python3
"""Record llama.cpp's sentence embeddings of the real models as golden data for tests/test_embeddings.py.

How to regenerate (needs llama-cpp-python==0.3.36; CI never runs this):

    /work/llcpp/bin/python scripts/make_embedding_goldens.py     # -> data/goldens/embeddings.json

For each model (SmolLM2, Gemma 3, from scripts/fetch_models.py) and each pooling ("mean", "last") the
JSON holds, per text below: the token ids llama.cpp embedded (its tokenizer, add_special=True,
parse_special=True, as llama-server tokenizes an embedding input) and the L2-normalized vector
(`Llama(embedding=True, pooling_type=...)`, `embed(normalize=True)`: llama-server's default
normalization), rounded to 6 decimals. Settings: n_ctx 512, n_batch = n_ubatch = 512 (each text in
one batch), n_threads 2, flash attention off, F16 KV cache (llama-cpp-python's defaults).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import llama_cpp

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "data" / "goldens" / "embeddings.json"
sys.path.insert(0, str(Path(__file__).resolve().parent))

# Pairs of paraphrases, then sentences about something else: the tests also check that cosine
# similarity ranks each paraphrase above every unrelated sentence.
TEXTS = [
    "The cat sat on the mat.",
    "A cat was sitting on the rug.",
    "The stock market fell sharply today.",
    "Share prices dropped steeply this afternoon.",
    "How do I bake sourdough bread at home?",
    "What is the recipe for homemade sourdough?",
    "Photosynthesis turns sunlight into chemical energy.",
    "Le chat dort sur le canapé. 🐈",
]
PARAPHRASES = [(0, 1), (2, 3), (4, 5)]
POOLINGS = {"mean": llama_cpp.LLAMA_POOLING_TYPE_MEAN, "last": llama_cpp.LLAMA_POOLING_TYPE_LAST}


def main() -> int:
    import fetch_models
    out = {"llama_cpp_python": llama_cpp.__version__, "texts": TEXTS, "paraphrases": PARAPHRASES, "models": {}}
    for name in ("smollm2", "gemma3"):
        path = str(fetch_models.model_path(name))
        per_pooling = {}
        for pooling, kind in POOLINGS.items():
            llm = llama_cpp.Llama(model_path=path, embedding=True, pooling_type=kind, n_ctx=512, n_batch=512,
                                  n_ubatch=512, n_threads=2, n_threads_batch=2, verbose=False)
            rows = []
            for text in TEXTS:
                ids = llm.tokenize(text.encode(), add_bos=True, special=True)
                vector = llm.embed(text, normalize=True)
                rows.append({"ids": ids, "vector": [round(float(v), 6) for v in vector]})
            per_pooling[pooling] = rows
            del llm
        out["models"][name] = per_pooling
    OUT.write_text(json.dumps(out, separators=(",", ":")) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
