"""Exact shingle Jaccard similarity of questions to a reference set (leakage analysis)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fdd_core.config import FilteringConfig
from fdd_core.filtering.minhash import MinHasher


def max_similarity_to(
    questions: Sequence[str], reference: Sequence[str], cfg: FilteringConfig
) -> list[float]:
    """Per question, the highest Jaccard similarity of its word-shingle set to any
    reference question's (0.0 when `reference` is empty).

    For the leakage analysis (the paper's Fig. 4) the whole range matters, not only pairs
    above the filter threshold, so this computes the *exact* Jaccard of the same shingle sets
    the MinHash signatures estimate, as a sparse intersection-count product in blocks.
    """
    from scipy import sparse

    if not questions:
        return []
    if not reference:
        return [0.0] * len(questions)
    hasher = MinHasher(cfg.num_perm, cfg.shingle_size)
    q_rows, q_cols, r_rows, r_cols, n_cols = _shingle_incidence(hasher, questions, reference)
    qm = sparse.csr_matrix(
        (np.ones(len(q_rows), dtype=np.float32), (q_rows, q_cols)), shape=(len(questions), n_cols)
    )
    rm = sparse.csr_matrix(
        (np.ones(len(r_rows), dtype=np.float32), (r_rows, r_cols)), shape=(len(reference), n_cols)
    )
    q_size = np.asarray(qm.sum(axis=1)).ravel()
    r_size = np.asarray(rm.sum(axis=1)).ravel()
    rt = rm.T.tocsc()
    best = np.zeros(len(questions), dtype=np.float64)
    block = 2048
    for lo in range(0, len(questions), block):
        inter = (qm[lo : lo + block] @ rt).tocoo()
        if inter.nnz == 0:
            continue
        rows = inter.row + lo
        common = inter.data.astype(np.float64)  # exact small integers in float32
        jac = common / (q_size[rows] + r_size[inter.col] - common)
        np.maximum.at(best, rows, jac)
    return best.tolist()


def _shingle_incidence(hasher: MinHasher, questions: Sequence[str], reference: Sequence[str]):
    """(row, column) pairs of the question x shingle and reference x shingle 0/1 matrices."""
    q_h, q_own = hasher.tokens(questions).windows(hasher.shingle_size, short_whole=True)
    r_h, r_own = hasher.tokens(reference).windows(hasher.shingle_size, short_whole=True)
    vocab, inverse = np.unique(np.concatenate((q_h, r_h)), return_inverse=True)
    q_cols, r_cols = inverse[: len(q_h)], inverse[len(q_h) :]
    # A shingle repeated inside one question counts once (sets, not bags).
    q_pairs = np.unique(np.stack((q_own, q_cols), axis=1), axis=0)
    r_pairs = np.unique(np.stack((r_own, r_cols), axis=1), axis=0)
    return q_pairs[:, 0], q_pairs[:, 1], r_pairs[:, 0], r_pairs[:, 1], len(vocab)
