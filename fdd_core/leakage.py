"""Leakage scores: how close each question is to each benchmark's test questions.

The paper's Fig. 4 compares the similarity of generated questions to the test sets with the
same similarity of the original training questions. This module scores every question by
the decontamination filter's own two measures (fdd_core.filtering), as continuous values
rather than the filter's yes/no:

- ``ngram``: the largest share of the question's word n-grams (``n = cfg.ngram_n``) that it
  shares with one test question. The filter drops a question as ``contaminated_ngram`` when
  any n-gram is shared, i.e. when this is > 0. A question shorter than n words has no
  n-gram and scores 0 here (the filter also matches test questions shorter than n words
  contained whole in a candidate; this score does not).
- ``jaccard``: the largest exact Jaccard similarity of its word-shingle set
  (``cfg.shingle_size`` words) to one test question's, the quantity the filter's MinHash
  signatures estimate; the filter drops at an *estimated* value >= ``cfg.near_dup_threshold``.

Both are computed exactly as sparse intersection counts in blocks (scipy), so they cover
the whole range [0, 1], not only pairs above a threshold.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from fdd_core.config import FilteringConfig
from fdd_core.filtering import MinHasher, max_similarity_to

MEASURES = ("ngram", "jaccard")


def max_ngram_overlap(
    questions: Sequence[str], reference: Sequence[str], cfg: FilteringConfig
) -> list[float]:
    """Per question: max over reference questions of |shared n-grams| / |question n-grams|."""
    from scipy import sparse

    if not questions:
        return []
    if not reference:
        return [0.0] * len(questions)
    n = cfg.ngram_n
    hasher = MinHasher(cfg.num_perm, cfg.shingle_size)
    q_h, q_own = hasher.tokens(questions).windows(n, short_whole=False)
    r_h, r_own = hasher.tokens(reference).windows(n, short_whole=False)
    if not len(q_h) or not len(r_h):
        return [0.0] * len(questions)
    vocab, inverse = np.unique(np.concatenate((q_h, r_h)), return_inverse=True)
    q_pairs = np.unique(np.stack((q_own, inverse[: len(q_h)]), axis=1), axis=0)
    r_pairs = np.unique(np.stack((r_own, inverse[len(q_h) :]), axis=1), axis=0)
    qm = sparse.csr_matrix(
        (np.ones(len(q_pairs), dtype=np.float32), (q_pairs[:, 0], q_pairs[:, 1])),
        shape=(len(questions), len(vocab)),
    )
    rt = sparse.csr_matrix(
        (np.ones(len(r_pairs), dtype=np.float32), (r_pairs[:, 0], r_pairs[:, 1])),
        shape=(len(reference), len(vocab)),
    ).T.tocsc()
    q_size = np.asarray(qm.sum(axis=1)).ravel()
    best = np.zeros(len(questions), dtype=np.float64)
    block = 2048
    for lo in range(0, len(questions), block):
        inter = (qm[lo : lo + block] @ rt).tocoo()
        if inter.nnz == 0:
            continue
        rows = inter.row + lo
        np.maximum.at(best, rows, inter.data.astype(np.float64) / q_size[rows])
    return best.tolist()


def leakage_scores(
    questions: Sequence[str], test_sets: Mapping[str, Sequence[str]], cfg: FilteringConfig
) -> list[dict[str, dict[str, float]]]:
    """Per question: {benchmark: {"ngram": x, "jaccard": y}} against that benchmark's tests."""
    out: list[dict[str, dict[str, float]]] = [{} for _ in questions]
    for name, tests in test_sets.items():
        ngram = max_ngram_overlap(questions, tests, cfg)
        jaccard = max_similarity_to(questions, tests, cfg)
        for row, g, j in zip(out, ngram, jaccard):
            row[name] = {"ngram": round(g, 6), "jaccard": round(j, 6)}
    return out


__all__ = ["MEASURES", "leakage_scores", "max_ngram_overlap"]
