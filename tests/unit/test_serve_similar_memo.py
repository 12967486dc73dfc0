"""The similar-items index keeps each answer: the same neighbours, bounded memory."""

from __future__ import annotations

import numpy as np

from mmrec.retrieval import ItemIndex
from mmrec.serve.loader import ModalityIndex


def _index(max_cached: int = 50_000) -> tuple[ModalityIndex, ItemIndex]:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(30, 8)).astype(np.float32)
    vectors[7] = np.nan  # item i7 has no vector in this space
    ids = [f"i{n}" for n in range(30)]
    return ModalityIndex(ItemIndex.build(ids, vectors, metric="cosine"), max_cached), ItemIndex.build(
        ids, vectors, metric="cosine"
    )


def test_kept_answers_equal_a_fresh_search_for_every_item_and_k():
    memo, fresh = _index()
    for _ in range(2):  # the second pass is answered from the memo
        for n in range(30):
            for k in (1, 5, 29):
                got = memo.similar(f"i{n}", k)
                if n == 7:
                    assert got is None
                else:
                    assert got == fresh.similar(f"i{n}", k)[0]
                    assert len(got) == min(k, 28)  # itself and the vector-less item left out


def test_the_memo_never_holds_more_than_max_cached_answers():
    memo, _ = _index(max_cached=3)
    for n in range(10):
        memo.similar(f"i{n}", 5)
        assert len(memo._memo) <= 3
    assert memo.similar("i9", 5) == memo.similar("i9", 5)
