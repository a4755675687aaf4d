"""Exact and near-duplicate detection against the dataset and the questions kept so far.

Scale. Everything kept is held in numpy arrays, not Python objects: per question a 64-bit
hash of its normalised text (exact duplicates), its MinHash signature, and one sorted
array of band keys per LSH band. That is about 0.5 kB a question (`num_perm=64`), so a
million kept questions need about 500 MB. A batch is checked against what was kept
before it in a few vectorised passes; only the batch's questions that collide with one
another are then resolved one by one, in input order, through a small per-batch index.
The decisions are exactly those of checking each question in turn against everything
kept before it (tests compare with that brute force).

The exact check compares 64-bit hashes (blake2b) of the normalised texts: two different
texts collide with probability about n**2 / 2**65 for n questions (3e-8 at a million),
and such a collision drops one question as an exact duplicate.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from fdd_core.config import FilteringConfig
from fdd_core.filtering.minhash import MinHasher, _encode, _Encoded, _LshIndex

_PAIR_BLOCK = 1 << 16  # candidate pairs verified at once: 2 x 16 MB of signatures


def text_hashes(normalized: Sequence[str]) -> np.ndarray:
    """64-bit blake2b of each normalised text (stable across processes)."""
    blake = hashlib.blake2b
    return np.fromiter(
        (
            int.from_bytes(blake(t.encode("utf-8"), digest_size=8).digest(), "little")
            for t in normalized
        ),
        dtype=np.uint64,
        count=len(normalized),
    )


def _expand_ranges(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(which range, position) for every position of the ranges [lo[i], hi[i])."""
    counts = hi - lo
    which = np.repeat(np.arange(len(lo)), counts)
    starts = np.cumsum(counts) - counts
    return which, lo[which] + (np.arange(len(which)) - starts[which])


class _KeptStore:
    """Hashes, signatures and sorted band keys of every kept question (numpy only)."""

    def __init__(self, num_perm: int, bands: int, rows: int, min_equal: int):
        self.bands, self.rows, self.min_equal = bands, rows, min_equal
        self.sigs = np.empty((0, num_perm), dtype=np.uint32)
        self.size = 0
        self.hashes = np.empty(0, dtype=np.uint64)  # sorted
        self.band_keys = [np.empty(0, dtype=np.uint64) for _ in range(bands)]  # sorted
        self.band_items = [np.empty(0, dtype=np.int64) for _ in range(bands)]

    def add(self, hashes: np.ndarray, sigs: np.ndarray, keys: np.ndarray) -> None:
        n = len(sigs)
        if n == 0:
            return
        items = np.arange(self.size, self.size + n, dtype=np.int64)
        if self.size + n > len(self.sigs):  # grow by doubling: amortised linear
            grown = np.empty((max(1024, 2 * (self.size + n)), self.sigs.shape[1]), np.uint32)
            grown[: self.size] = self.sigs[: self.size]
            self.sigs = grown
        self.sigs[self.size : self.size + n] = sigs
        self.size += n
        new = np.sort(hashes)
        self.hashes = np.insert(self.hashes, np.searchsorted(self.hashes, new), new)
        for b in range(self.bands):
            order = np.argsort(keys[:, b], kind="stable")
            k = keys[order, b]
            at = np.searchsorted(self.band_keys[b], k, side="right")
            self.band_keys[b] = np.insert(self.band_keys[b], at, k)
            self.band_items[b] = np.insert(self.band_items[b], at, items[order])

    def has_hash(self, hashes: np.ndarray) -> np.ndarray:
        if not len(self.hashes):
            return np.zeros(len(hashes), dtype=bool)
        pos = np.minimum(np.searchsorted(self.hashes, hashes), len(self.hashes) - 1)
        return self.hashes[pos] == hashes

    def near(self, sigs: np.ndarray, keys: np.ndarray) -> np.ndarray:
        """Per row: does some kept question agree on at least `min_equal` positions?"""
        out = np.zeros(len(sigs), dtype=bool)
        if not self.size or not len(sigs):
            return out
        pairs = []
        for b in range(self.bands):
            sorted_keys = self.band_keys[b]
            lo = np.searchsorted(sorted_keys, keys[:, b], side="left")
            hi = np.searchsorted(sorted_keys, keys[:, b], side="right")
            hit = np.flatnonzero(hi > lo)
            if len(hit):
                which, pos = _expand_ranges(lo[hit], hi[hit])
                pairs.append(hit[which] * self.size + self.band_items[b][pos])
        if not pairs:
            return out
        both = np.unique(np.concatenate(pairs))  # a pair sharing several bands: once
        for start in range(0, len(both), _PAIR_BLOCK):
            block = both[start : start + _PAIR_BLOCK]
            row, item = block // self.size, block % self.size
            equal = np.count_nonzero(sigs[row] == self.sigs[item], axis=1)
            out[row[equal >= self.min_equal]] = True
        return out


class Deduplicator:
    """Exact and near-duplicate detection against the dataset and every question kept so far."""

    def __init__(self, existing: Sequence[str], cfg: FilteringConfig):
        self.cfg = cfg
        self.hasher = MinHasher(cfg.num_perm, cfg.shingle_size)
        # The band layout and the key function; the kept questions live in `store`.
        self.index = _LshIndex(cfg.num_perm, cfg.near_dup_threshold)
        self.store = _KeptStore(
            cfg.num_perm, self.index.bands, self.index.rows, self.index.min_equal
        )
        enc = _encode(existing, self.hasher, self.index)
        # Existing questions are indexed as they are (not deduplicated among themselves).
        self.store.add(text_hashes(enc.normalized), enc.sigs, enc.keys)

    @property
    def size(self) -> int:
        """Questions indexed: the existing ones and every candidate kept so far."""
        return self.store.size

    def check_and_add(self, question: str) -> str | None:
        """'duplicate_exact' / 'duplicate_near', or None (then the question joins the index)."""
        return self.check_and_add_many([question])[0]

    def check_and_add_many(self, questions: Sequence[str]) -> list[str | None]:
        """`check_and_add` on each question in order (signatures computed in one batch)."""
        enc = _encode(questions, self.hasher, self.index)
        return self._check_and_add_rows(enc, list(range(len(enc))))

    def _check_and_add_rows(self, enc: _Encoded, rows: list[int]) -> list[str | None]:
        if not rows:
            return []
        idx = np.asarray(rows, dtype=np.int64)
        hashes = text_hashes([enc.normalized[i] for i in rows])
        sigs, keys = enc.sigs[idx], enc.keys[idx]
        out: list[str | None] = [None] * len(rows)

        # 1. Against everything kept before this batch (vectorised).
        exact = self.store.has_hash(hashes)
        open_ = np.flatnonzero(~exact)
        near = np.zeros(len(rows), dtype=bool)
        near[open_] = self.store.near(sigs[open_], keys[open_])
        for j in np.flatnonzero(exact).tolist():
            out[j] = "duplicate_exact"
        for j in np.flatnonzero(near).tolist():
            out[j] = "duplicate_near"

        # 2. Within the batch, in input order: only rows that share a text hash or a band
        # key with another open row can be affected by an earlier row of the batch.
        open_ = np.flatnonzero(~exact & ~near)
        linked = np.zeros(len(open_), dtype=bool)
        for column in [hashes[open_], *keys[open_].T]:
            _, inverse, counts = np.unique(column, return_inverse=True, return_counts=True)
            linked |= counts[inverse] > 1
        local = _LshIndex(self.cfg.num_perm, self.cfg.near_dup_threshold)
        local_hashes: set[int] = set()
        kept = np.zeros(len(rows), dtype=bool)
        kept[open_[~linked]] = True
        for j in open_[linked].tolist():
            h = int(hashes[j])
            if h in local_hashes:
                out[j] = "duplicate_exact"
            elif local.best(sigs[j], keys[j].tolist()) is not None:
                out[j] = "duplicate_near"
            else:
                local_hashes.add(h)
                local.add(sigs[j], keys[j].tolist())
                kept[j] = True
        new = np.flatnonzero(kept)
        self.store.add(hashes[new], sigs[new], keys[new])
        return out
