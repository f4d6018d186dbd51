"""The /classify label cache: bounded in bytes, keyed on the token ids the model sees."""

from __future__ import annotations

import numpy as np
import pytest

from server.label_cache import LabelCache

pytestmark = pytest.mark.unit

DIM = 512


def vectors(prompts: list[str]) -> list[np.ndarray]:
    return [np.full(DIM, len(p), dtype=np.float32) for p in prompts]


def tokens(prompt: str, context: int = 8) -> bytes:
    """A stand-in tokenizer with a context of 8 'tokens' (characters)."""
    ids = np.frombuffer(prompt.encode()[:context], dtype=np.uint8).astype(np.int64)
    return np.pad(ids, (0, context - len(ids))).tobytes()


def test_cache_stays_within_its_byte_budget_evicting_the_least_recently_used():
    entry = LabelCache.entry_bytes(tokens("x"), vectors(["x"])[0])
    cache = LabelCache(capacity=10_000, max_bytes=3 * entry)
    cache.get_many(["a", "b", "c"], vectors, key=tokens)
    cache.get_many(["a"], vectors, key=tokens)  # a is now the most recent
    cache.get_many(["d"], vectors, key=tokens)
    assert len(cache) == 3 and cache.nbytes <= 3 * entry
    computed = []
    cache.get_many(["a", "b"], lambda missing: computed.extend(missing) or vectors(missing), key=tokens)
    assert computed == ["b"]  # b was evicted, a was kept


def test_cache_is_keyed_on_what_the_model_sees_not_the_raw_string():
    cache = LabelCache(capacity=100, max_bytes=1 << 20)
    long_prompt = "a photo of a cat" + "!" * 1_000_000  # truncated to the same 8 tokens
    out = cache.get_many(["a photo of a cat", long_prompt], vectors, key=tokens)
    assert out.shape == (2, DIM) and (cache.hits, cache.misses, len(cache)) == (0, 1, 1)
    assert cache.nbytes < 4 * 1024  # the megabyte-long prompt is not kept
    cache.get_many([long_prompt + "?"], vectors, key=tokens)
    assert (cache.hits, cache.misses) == (1, 1)


def test_an_entry_larger_than_the_whole_budget_is_computed_but_not_kept():
    cache = LabelCache(capacity=100, max_bytes=1024)
    assert cache.get_many(["cat"], vectors, key=tokens).shape == (1, DIM)
    assert len(cache) == 0 and cache.nbytes == 0
