"""The tokenizers' word caches stay bounded under endless distinct words, and still tokenize right."""

from __future__ import annotations

import random
import string

import pytest

from server.backends.word_cache import BoundedWordCache

pytestmark = pytest.mark.unit


def words(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choices(string.ascii_lowercase, k=9)) for _ in range(count)]


def test_the_oldest_word_goes_and_pinned_entries_stay():
    cache = BoundedWordCache({"<start>": "<start>", "<end>": "<end>"}, max_words=3)
    for word in ("a", "b", "c", "d"):
        cache[word] = word.upper()
    assert list(cache) == ["<start>", "<end>", "b", "c", "d"]
    cache["b"] = "B again"  # an update is not a new word: nothing is evicted
    assert len(cache) == 5 and "b" in cache


def test_open_clip_tokenizer_cache_is_bounded_and_ids_are_unchanged():
    """Without the bound, open_clip keeps every distinct word it ever saw (the soak's slope)."""
    import open_clip

    from server.backends.open_clip_backend import OpenClipBackend
    from server.models import resolve_spec
    from server.settings import ServerSettings

    settings = ServerSettings.from_env({}, clip_model="ViT-B-32", clip_pretrained="random")
    backend = OpenClipBackend(settings, resolve_spec(settings))
    backend.load()
    assert isinstance(backend._tokenizer.cache, BoundedWordCache)  # load() installs it
    backend._tokenizer.cache.max_words = 500  # a small bound, to see it work quickly
    reference = open_clip.get_tokenizer("ViT-B-32")  # a fresh one, unbounded
    texts = [" ".join(group) for group in zip(*[iter(words(3000))] * 3)]
    for text in texts:
        assert list(backend.tokenize(text)) == reference([text])[0].tolist()
    assert len(backend._tokenizer.cache) <= 500 + 2  # the words, plus the two special tokens
    assert len(reference.cache) > 3000
    for text in texts[:50]:  # words evicted long ago tokenize the same when they come back
        assert list(backend.tokenize(text)) == reference([text])[0].tolist()
