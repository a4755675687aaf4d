"""Decontamination: n-gram and near-duplicate overlap with any benchmark's test questions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from fdd_core.config import FilteringConfig
from fdd_core.filtering.minhash import MinHasher, _encode, _Encoded, _LshIndex, _Tokens


class Decontaminator:
    """Flags questions that overlap any benchmark's test questions.

    Built once over every test set (benchmark name -> test questions); `check` says why a
    question is contaminated and by which benchmark (the first configured one on ties).
    """

    def __init__(self, test_sets: Mapping[str, Sequence[str]], cfg: FilteringConfig):
        self.cfg = cfg
        self.names = list(test_sets)
        self.hasher = MinHasher(cfg.num_perm, cfg.shingle_size)
        self.index = _LshIndex(cfg.num_perm, cfg.near_dup_threshold)
        questions = [q for name in self.names for q in test_sets[name]]
        sizes = [len(test_sets[name]) for name in self.names]
        self._owner_bench = np.repeat(np.arange(len(self.names)), sizes)
        # Test sets are small (~5k questions): one chunk, no need for bounded memory.
        toks = self.hasher.tokens(questions)
        sigs = self.hasher.signatures(toks)
        keys = self.index.keys(sigs)
        self.index.add_many(sigs, keys)
        self._band_keys = [np.unique(keys[:, b]) for b in range(self.index.bands)]
        self._build_ngrams(toks)

    def _build_ngrams(self, toks: _Tokens) -> None:
        n = self.cfg.ngram_n
        grams, owners = toks.windows(n, short_whole=False)
        # A test question shorter than n words is one "gram" of its own length.
        short = np.flatnonzero(toks.lens < n)
        self.short_lengths = sorted(set(toks.lens[short].tolist()))
        if len(short):
            grams = np.concatenate((grams, self._whole_hashes(toks, short)))
            owners = np.concatenate((owners, short))
        bench = self._owner_bench[owners]
        order = np.lexsort((bench, grams))  # by hash, then benchmark order
        self._grams = grams[order]
        self._gram_bench = bench[order]

    @staticmethod
    def _whole_hashes(toks: _Tokens, texts: np.ndarray) -> np.ndarray:
        """Hash of each given text as one window of its own length: the hash a candidate's
        window of that width gets when it holds the same words."""
        out = np.empty(len(texts), dtype=np.uint64)
        lens = toks.lens[texts]
        for length in sorted(set(lens.tolist())):
            sel = texts[lens == length]
            hashes, owners = toks.windows(int(length), short_whole=False)
            out[lens == length] = hashes[np.searchsorted(owners, sel)]  # one window each
        return out

    def check(self, question: str) -> tuple[str, str] | None:
        """(reason, benchmark) when the question is contaminated, else None."""
        return self.check_many([question])[0]

    def check_many(self, questions: Sequence[str]) -> list[tuple[str, str] | None]:
        return self._check_encoded(_encode(questions, self.hasher, self.index))

    def _check_encoded(self, enc: _Encoded) -> list[tuple[str, str] | None]:
        out: list[tuple[str, str] | None] = [None] * len(enc)
        lo = 0
        for toks in enc.chunks:
            for i, bench in self._ngram_hits(toks).items():
                out[lo + i] = ("contaminated_ngram", self.names[bench])
            lo += len(toks.lens)
        # LSH: only candidates sharing some band key with a test question need a look.
        hit = np.zeros(len(enc), dtype=bool)
        for b, known in enumerate(self._band_keys):
            hit |= np.isin(enc.keys[:, b], known)
        for i in np.flatnonzero(hit).tolist():
            if out[i] is not None:
                continue
            best = self.index.best(enc.sigs[i], enc.keys[i].tolist())
            if best is not None:
                out[i] = ("contaminated_near", self.names[int(self._owner_bench[best[0]])])
        return out

    def _ngram_hits(self, toks: _Tokens) -> dict[int, int]:
        """Text -> benchmark of its first gram found in a test set (n-grams first, then
        whole short test questions, longest first; leftmost within a width)."""
        found: dict[int, int] = {}
        if not len(self._grams):
            return found
        for width in [self.cfg.ngram_n, *reversed(self.short_lengths)]:
            hashes, owners = toks.windows(int(width), short_whole=False)
            pos = np.minimum(np.searchsorted(self._grams, hashes), len(self._grams) - 1)
            idx = np.flatnonzero(self._grams[pos] == hashes)
            texts, first = np.unique(owners[idx], return_index=True)
            for t, j in zip(texts.tolist(), idx[first].tolist()):
                found.setdefault(t, int(self._gram_bench[pos[j]]))
        return found
