"""Exact and near-duplicate detection against the dataset and the questions kept so far."""

from __future__ import annotations

from collections.abc import Sequence

from fdd_core.config import FilteringConfig
from fdd_core.filtering.minhash import MinHasher, _encode, _Encoded, _LshIndex


class Deduplicator:
    """Exact and near-duplicate detection against the dataset and every question kept so far."""

    _PREFILTER_MIN_ROWS = 256  # below this, looking each row up is cheaper than the prefilter

    def __init__(self, existing: Sequence[str], cfg: FilteringConfig):
        self.cfg = cfg
        self.hasher = MinHasher(cfg.num_perm, cfg.shingle_size)
        self.index = _LshIndex(cfg.num_perm, cfg.near_dup_threshold)
        enc = _encode(existing, self.hasher, self.index)
        self._exact: set[str] = set(enc.normalized)
        self.index.add_many(enc.sigs, enc.keys)

    def check_and_add(self, question: str) -> str | None:
        """'duplicate_exact' / 'duplicate_near', or None (then the question joins the index)."""
        return self.check_and_add_many([question])[0]

    def check_and_add_many(self, questions: Sequence[str]) -> list[str | None]:
        """`check_and_add` on each question in order (signatures computed in one batch)."""
        enc = _encode(questions, self.hasher, self.index)
        return self._check_and_add_rows(enc, list(range(len(enc))))

    def _check_and_add_rows(self, enc: _Encoded, rows: list[int]) -> list[str | None]:
        keys = enc.keys[rows]
        if len(rows) >= self._PREFILTER_MIN_ROWS:
            may_collide = self.index.may_collide(keys).tolist()
        else:
            may_collide = [True] * len(rows)
        out: list[str | None] = []
        for j, (i, key_row) in enumerate(zip(rows, keys.tolist())):
            norm = enc.normalized[i]
            if norm in self._exact:
                out.append("duplicate_exact")
            elif may_collide[j] and self.index.best(enc.sigs[i], key_row) is not None:
                out.append("duplicate_near")
            else:
                self._exact.add(norm)
                self.index.add(enc.sigs[i], key_row)
                out.append(None)
        return out
