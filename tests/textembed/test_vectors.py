"""The service's vectors are sentence-transformers' own, also when short and long texts share batches,
and every bad input gets a clear 4xx while the next request still works."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from tests.textembed.conftest import LONG, SHORT

pytestmark = pytest.mark.integration


def cosines(got, expected) -> np.ndarray:
    return (np.asarray(got) * np.asarray(expected)).sum(axis=1)


def test_vectors_equal_sentence_transformers_in_mixed_concurrent_batches(textembed_app, reference):
    texts = SHORT + LONG
    expected = reference.encode(texts, normalize_embeddings=True)
    client = textembed_app.test_client()
    before = textembed_app.extensions["model_runner"].batcher.stats.snapshot()["batches"]

    def embed(text):
        return client.post("/embed", json={"texts": [text]}).get_json()["embeddings"][0]

    with ThreadPoolExecutor(len(texts)) as pool:  # one text per request: only the batcher can join them
        got = list(pool.map(embed, texts))
    assert cosines(got, expected).min() >= 0.999
    stats = textembed_app.extensions["model_runner"].batcher.stats.snapshot()
    assert stats["batches"] - before < len(texts)  # requests shared forward calls
    whole = client.post("/embed", json={"texts": texts}).get_json()
    assert whole["dim"] == 384 and len(whole["embeddings"]) == len(texts)
    assert cosines(whole["embeddings"], expected).min() >= 0.999
    assert whole["usage"]["tokens"] == sum(len(reference.tokenizer(t)["input_ids"]) for t in texts)


@pytest.mark.parametrize(("body", "status", "code"), [
    ({"texts": []}, 400, "no_input"),
    ({"texts": ["fine", "   "]}, 400, "empty_text"),
    ({"texts": [3]}, 400, "invalid_field"),
    ({"texts": ["a"] * 65}, 413, "too_many_inputs"),  # MAX_INPUTS=64
    ({"texts": ["word " * 300]}, 413, "text_too_long"),  # 302 tokens; the model takes 256
    ({"texts": ["x" * 20000]}, 413, "text_too_long"),  # refused before tokenising
    ({"texts": ["a"], "dimensions": 384}, 400, "unknown_field"),
    ({"texts": ["a"], "encoding_format": "int8"}, 400, "invalid_option"),
])
def test_bad_input_is_a_clear_4xx_and_the_next_request_works(textembed_app, body, status, code):
    client = textembed_app.test_client()
    answer = client.post("/embed", json=body)
    assert answer.status_code == status and answer.get_json()["error"]["code"] == code, answer.get_json()
    assert client.post("/embed", json={"texts": ["still serving"]}).status_code == 200


def test_openai_route_checks_dimensions_and_counts_tokens(textembed_app):
    client = textembed_app.test_client()
    assert client.post("/v1/embeddings", json={"input": "a", "dimensions": 128}).get_json()["error"]["code"] \
        == "invalid_option"
    answer = client.post("/v1/embeddings", json={"input": ["a cat", "a dog"], "model": "x", "dimensions": 384})
    body = answer.get_json()
    assert answer.status_code == 200 and [d["index"] for d in body["data"]] == [0, 1]
    assert body["usage"] == {"prompt_tokens": 8, "total_tokens": 8}  # [CLS] a cat [SEP], twice


def test_truncate_texts_cuts_at_the_token_limit_as_sentence_transformers_does(models_dir, reference):
    from tests.conftest import wait_until
    from textembed.app import create_app
    from textembed.settings import TextEmbedSettings

    app = create_app(TextEmbedSettings.from_env({}, models_dir=models_dir, log_level="WARNING", truncate_texts=True))
    client = app.test_client()
    wait_until(lambda: client.get("/health").status_code == 200, 120)
    text = " ".join(LONG)  # ~500 tokens
    answer = client.post("/embed", json={"texts": [text]}).get_json()
    assert answer["usage"]["tokens"] == 256
    assert cosines(answer["embeddings"], reference.encode([text], normalize_embeddings=True))[0] >= 0.999
    app.extensions["model_runner"].batcher.stop()


def test_the_precision_is_the_cpus_best_and_float32_gives_sentence_transformers_vectors_exactly(
        textembed_app, models_dir, reference):
    # The default (auto) is bfloat16 on a CPU with native bf16 (this machine's kind, AMD Zen 4) and
    # float32 elsewhere: the cosine test above ran on whichever this CPU picks. float32 is exact.
    from core.model.backend import BaseBackend
    from tests.conftest import wait_until
    from textembed.app import create_app
    from textembed.settings import TextEmbedSettings

    assert textembed_app.test_client().get("/health").get_json()["dtype"] == BaseBackend.pick_dtype("auto", "cpu")
    app = create_app(TextEmbedSettings.from_env({}, models_dir=models_dir, log_level="WARNING",
                                                textembed_dtype="float32"))
    client = app.test_client()
    wait_until(lambda: client.get("/health").status_code == 200, 120)
    assert client.get("/health").get_json()["dtype"] == "float32"
    texts = SHORT + LONG
    answer = client.post("/embed", json={"texts": texts}).get_json()
    assert cosines(answer["embeddings"], reference.encode(texts, normalize_embeddings=True)).min() >= 0.99999
    app.extensions["model_runner"].batcher.stop()
