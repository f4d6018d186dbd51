"""A bounded word cache for BPE tokenizers.

open_clip's ``SimpleTokenizer`` remembers the BPE of every distinct word it has ever seen, in a
plain dict that never forgets: users' texts (names, IDs, typos, other languages) make it grow for
as long as the process lives (measured: 50 MiB per 200,000 distinct words). This cache keeps the most
recently added ``max_words`` and the tokenizer's special tokens, which must never be evicted (the
tokenizer finds them only in its cache: evicted, ``<start_of_text>`` would be split by BPE).
transformers 5's CLIP tokenizers (the ``hf:`` backend) are Rust-backed and bound their own cache.
"""

from __future__ import annotations

import threading

# About 12 MiB of entries: every common word of every language the model reads stays cached; a
# word that falls out costs one BPE pass (tens of microseconds) when it comes back.
WORD_CACHE_SIZE = 50_000


class BoundedWordCache(dict):
    """A dict that drops its oldest non-pinned entry when a new word would exceed ``max_words``."""

    def __init__(self, pinned: dict, max_words: int = WORD_CACHE_SIZE):
        super().__init__(pinned)
        self._pinned = frozenset(pinned)
        self.max_words = max_words
        self._lock = threading.Lock()  # request threads tokenise at once; eviction iterates the dict

    def __setitem__(self, key, value) -> None:
        with self._lock:
            if key not in self and len(self) >= self.max_words + len(self._pinned):
                # Insertion order is age; the pinned entries came first, so this looks at a few keys only.
                oldest = next(word for word in self if word not in self._pinned)
                self.pop(oldest, None)
            super().__setitem__(key, value)


def bound_word_cache(tokenizer, max_words: int = WORD_CACHE_SIZE) -> None:
    """Give ``tokenizer`` a bounded word cache, keeping what it holds now (its special tokens) pinned."""
    cache = getattr(tokenizer, "cache", None)
    if isinstance(cache, dict) and not isinstance(cache, BoundedWordCache):
        tokenizer.cache = BoundedWordCache(cache, max_words)
