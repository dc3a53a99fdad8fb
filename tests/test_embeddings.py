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


# ---- the endpoints: /v1/embeddings through the openai client, llama.cpp's /embeddings -----------------

@pytest.fixture(scope="module")
def server(smollm2_model):
    from server_helpers import start_server
    s = start_server(smollm2_model)
    yield s
    s.stop()


def test_openai_client_embeddings(server, models):
    import openai
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=300)
    texts = GOLDEN["texts"][:3]
    r = client.embeddings.create(model="m", input=texts)            # the client asks for base64 by default
    assert [d.index for d in r.data] == [0, 1, 2] and r.object == "list"
    model = models["smollm2"]
    ids = [model.tokenize(t) for t in texts]
    assert r.usage.prompt_tokens == r.usage.total_tokens == sum(map(len, ids))
    for d, x in zip(r.data, ids):
        np.testing.assert_allclose(d.embedding, embed(model, x, "mean"), rtol=1e-6, atol=1e-7)
    floats = client.embeddings.create(model="m", input=texts[0], encoding_format="float")
    np.testing.assert_allclose(floats.data[0].embedding, r.data[0].embedding, rtol=1e-6, atol=1e-7)
    as_ids = client.embeddings.create(model="m", input=[ids[0], ids[1]])      # token ids, as OpenAI allows
    np.testing.assert_allclose(as_ids.data[1].embedding, r.data[1].embedding, rtol=1e-6, atol=1e-7)


def test_native_embeddings_shape(server, models):
    from server_helpers import httpx
    r = httpx.post(server.url + "/embeddings", json={"content": ["hello", "world"]}, timeout=300).json()
    assert [x["index"] for x in r] == [0, 1]
    assert all(len(x["embedding"]) == 1 and len(x["embedding"][0]) == models["smollm2"].config.dim for x in r)
    raw = httpx.post(server.url + "/embedding", json={"input": "hello", "embd_normalize": -1}, timeout=300).json()
    assert np.linalg.norm(raw[0]["embedding"][0]) > 1.5                      # not normalized when asked so
    # llama.cpp's object entries: text parts taken one after another
    objs = httpx.post(server.url + "/v1/embeddings", timeout=300, json={"input": [
        "hello world", {"content": [{"type": "text", "text": "hello "}, {"type": "text", "text": "world"}]}]}).json()
    assert objs["data"][0]["embedding"] == objs["data"][1]["embedding"]
    long = httpx.post(server.url + "/v1/embeddings", json={"input": [1] * (server.engine.n_ctx + 1)}, timeout=60)
    assert long.status_code == 400 and "too large" in long.json()["error"]["message"]      # llama.cpp's words
    for bad in ({}, {"input": ""}, {"input": [[]]}, {"input": {"content": "x"}},
                {"input": {"content": [{"type": "image_url", "image_url": {"url": "data:,"}}]}}, {"input": "x", "encoding_format": "hex"},
                {"input": "x", "dimensions": 3}, {"input": [10**9]}, {"input": "x", "embd_normalize": "2"}):
        assert httpx.post(server.url + "/v1/embeddings", json=bad, timeout=60).status_code == 400


def test_pooling_none_server(smollm2_model):
    """--pooling none: /embeddings gives every token's row, /v1/embeddings refuses (as llama-server)."""
    from server_helpers import httpx, start_server
    s = start_server(smollm2_model, pooling="none")
    try:
        ids = smollm2_model.tokenize("The cat sat")
        rows = httpx.post(s.url + "/embeddings", json={"content": ids}, timeout=300).json()[0]["embedding"]
        np.testing.assert_allclose(rows, embed(smollm2_model, ids, "none"), rtol=1e-6, atol=1e-6)
        r = httpx.post(s.url + "/v1/embeddings", json={"input": "The cat sat"}, timeout=60)
        assert r.status_code == 400 and "--pooling" in r.json()["error"]["message"]
    finally:
        s.stop()
