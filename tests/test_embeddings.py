"""Embeddings of the real models against llama.cpp's (llama-cpp-python 0.3.36, `embedding=True`), recorded
by scripts/make_embedding_goldens.py, and the pooling/normalization rules on their own.

Tolerance: cosine similarity with llama.cpp's vector >= 0.995 and every component within 0.03 (vectors are
L2-normalized; measured worst: cosine 0.9980 and 0.022, Gemma 3 "last"). The hidden states differ as the
logits do (llama.cpp rounds activations to 8 bits before each quantized product; see test_goldens.py)."""
from __future__ import annotations

import json

import numpy as np
import pytest

import runtime
from runtime.embeddings import embed, model_pooling, normalize, pool

from conftest import GOLDENS
from server_helpers import smollm2_model  # noqa: F401

GOLDEN = json.loads((GOLDENS / "embeddings.json").read_text())
MIN_COSINE = 0.995
MAX_DIFF = 0.03


@pytest.fixture(scope="module")
def models(smollm2_model, gemma3_path):
    return {"smollm2": smollm2_model, "gemma3": runtime.load(gemma3_path)}


def _cos(a, b) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.parametrize("name", ["smollm2", "gemma3"])
@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_vectors_match_llama_cpp(models, name, pooling):
    model = models[name]
    vectors = []
    for text, row in zip(GOLDEN["texts"], GOLDEN["models"][name][pooling]):
        ids = model.tokenize(text, add_special=True, parse_special=True)
        assert ids == row["ids"]
        ours, ref = embed(model, ids, pooling), np.array(row["vector"], np.float32)
        assert ours.shape == ref.shape == (model.config.dim,)
        assert np.linalg.norm(ours) == pytest.approx(1.0, abs=1e-5)
        assert _cos(ours, ref) >= MIN_COSINE, text
        assert np.abs(ours - ref).max() <= MAX_DIFF, text
        vectors.append(ours)
    if pooling != "mean":
        return   # "last" pooling of SmolLM2 ranks one paraphrase (of 6) second, in llama.cpp too
    # the use they are for (default pooling): each paraphrase is closer to its pair than to any other
    sims = np.array(vectors) @ np.array(vectors).T
    for a, b in GOLDEN["paraphrases"]:
        others = [j for j in range(len(vectors)) if j not in (a, b)]
        assert sims[a, b] > sims[a, others].max() and sims[a, b] > sims[b, others].max()


def test_pooling_none_is_every_position_unnormalized(models):
    model = models["smollm2"]
    ids = model.tokenize("The cat sat on the mat.")
    rows = embed(model, ids, "none")
    assert rows.shape == (len(ids), model.config.dim)
    assert not np.allclose(np.linalg.norm(rows, axis=1), 1.0)
    # the pooled vectors are made from exactly these rows
    np.testing.assert_allclose(embed(model, ids, "last"), rows[-1] / np.linalg.norm(rows[-1]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(embed(model, ids, "cls"), rows[0] / np.linalg.norm(rows[0]), rtol=1e-5, atol=1e-6)
    mean = rows.mean(axis=0)
    np.testing.assert_allclose(embed(model, ids, "mean"), mean / np.linalg.norm(mean), rtol=1e-4, atol=1e-6)


def test_normalizations_as_llama_cpp_defines_them():
    v = np.array([3.0, -4.0, 0.0], np.float32)
    np.testing.assert_allclose(normalize(v, 2), [0.6, -0.8, 0.0], rtol=1e-6)
    np.testing.assert_allclose(normalize(v, 1), [3 / 7, -4 / 7, 0.0], rtol=1e-6)
    np.testing.assert_allclose(normalize(v, 0), [3 * 32760 / 4, -32760, 0.0], rtol=1e-6)   # int16 range
    np.testing.assert_allclose(normalize(v, -1), v)
    np.testing.assert_allclose(normalize(v, 3), v / (27 + 64) ** (1 / 3), rtol=1e-6)
    assert not normalize(np.zeros(3, np.float32), 2).any()                                 # no division by 0
    rows = np.arange(6, dtype=np.float32).reshape(3, 2)
    np.testing.assert_array_equal(pool(rows, "mean"), [2.0, 3.0])


def test_pooling_choice():
    assert model_pooling(None) == "mean"                 # a chat model declares none
    assert model_pooling("cls") == "cls"                  # an embedding model's own
    assert model_pooling("rank") == "mean"                # rerankers' head is not supported
    assert model_pooling("cls", override="last") == "last"
