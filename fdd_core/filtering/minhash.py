"""MinHash signatures of word shingles and the banded LSH index behind dedup and decontamination.

Representation. A question is normalised (`normalize_text`) and split into word tokens
(punctuation dropped, "5.5" and "1,200" kept whole). Near duplicates compare sets of
``cfg.shingle_size``-word shingles through MinHash signatures computed for many questions at
once in numpy, bit for bit the signatures datasketch 2.0's ``MinHash(scheme="affine32")``
gives for the same shingle hashes (tests check this). The LSH index uses
``b = floor((1 - t) * num_perm) + 1`` bands: a pair whose signatures agree on at least
``t * num_perm`` positions differs in at most ``b - 1`` positions, so some band agrees fully
and the pair is always a candidate. Each candidate is then verified on its whole signature,
so a decision equals "estimated Jaccard >= t against some indexed question", with no LSH
misses (datasketch's default band choice for t=0.8 and 64 permutations, 5 bands of 11
rows, misses about a quarter of pairs at Jaccard 0.88).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import chain

import numpy as np

from fdd_core.filtering.checks import _TOKEN
from fdd_core.schemas import normalize_text

MINHASH_SEED = 1  # datasketch's default seed: our permutations are its permutations


_U64 = np.uint64
_MASK32 = _U64(0xFFFFFFFF)
_POLY = _U64(0x9E3779B97F4A7C15)  # odd multiplier of the window (n-gram / shingle) hash
_FNV = _U64(0x100000001B3)


def _fmix64(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finalizer: spreads every input bit over the output."""
    h = h ^ (h >> _U64(33))
    h = h * _U64(0xFF51AFD7ED558CCD)
    h = h ^ (h >> _U64(33))
    h = h * _U64(0xC4CEB9FE1A85EC53)
    return h ^ (h >> _U64(33))


def _fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finalizer, as datasketch applies it before its permutations."""
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


def _word_hash(word: str) -> int:
    # blake2b, not hash(): Python's string hash changes between processes.
    return int.from_bytes(hashlib.blake2b(word.encode("utf-8"), digest_size=8).digest(), "little")


class _Tokens:
    """Flat token hashes of many texts, with per-text lengths (every text has >= 1 token)."""

    def __init__(self, normalized: Sequence[str], cache: dict[str, int]):
        findall = _TOKEN.findall
        per_text = [findall(t) or [""] for t in normalized]  # "" stands for a text without words
        flat = list(chain.from_iterable(per_text))
        for word in set(flat).difference(cache):
            cache[word] = _word_hash(word)
        self.hashes = np.fromiter(map(cache.__getitem__, flat), dtype=np.uint64, count=len(flat))
        self.lens = np.fromiter(map(len, per_text), dtype=np.int64, count=len(per_text))
        self.offsets = np.zeros(len(per_text), dtype=np.int64)
        if len(per_text) > 1:
            np.cumsum(self.lens[:-1], out=self.offsets[1:])

    def windows(self, width: int, *, short_whole: bool) -> tuple[np.ndarray, np.ndarray]:
        """Hashes of every run of `width` consecutive tokens, and the text each comes from.

        `short_whole`: a text shorter than `width` gives one window of all its tokens
        (shingles); otherwise it gives none (n-grams).
        """
        lens = self.lens
        counts = np.maximum(lens - width + 1, 1 if short_whole else 0)
        owners = np.repeat(np.arange(len(lens)), counts)
        firsts = np.cumsum(counts) - counts
        starts = self.offsets[owners] + (np.arange(len(owners)) - firsts[owners])
        ends = (self.offsets + lens)[owners]
        padded = np.concatenate((self.hashes, np.zeros(width, dtype=np.uint64)))
        h = np.full(len(starts), _U64(width) * _FNV, dtype=np.uint64)  # the width is hashed in
        for m in range(width):
            pos = starts + m
            tok = padded[pos]
            if short_whole:
                tok = np.where(pos < ends, tok, _U64(0))
            h = h * _POLY + tok  # wraps modulo 2**64 on purpose
        return _fmix64(h), owners


@lru_cache(maxsize=32)
def _permutations(num_perm: int) -> tuple[np.ndarray, np.ndarray]:
    from datasketch import MinHash

    a, b = MinHash(num_perm=num_perm, seed=MINHASH_SEED, scheme="affine32").permutations
    return a.astype(np.uint32), b.astype(np.uint32)


def lsh_bands(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows): enough bands that a pair at or above the threshold always collides."""
    max_mismatch = math.floor((1.0 - threshold) * num_perm + 1e-9)
    bands = min(max_mismatch + 1, num_perm)
    return bands, num_perm // bands


class MinHasher:
    """Vectorised MinHash of word shingles, datasketch-compatible ("affine32", seed 1)."""

    _CHUNK_SHINGLES = 1 << 17  # rows of the (shingles x num_perm) matrix held at once

    def __init__(self, num_perm: int, shingle_size: int):
        self.num_perm = num_perm
        self.shingle_size = shingle_size
        self._a, self._b = _permutations(num_perm)
        self._cache: dict[str, int] = {}

    def tokens(self, texts: Sequence[str], *, normalized: bool = False) -> _Tokens:
        """Token hashes of the texts (`normalized`: they already went through normalize_text)."""
        return _Tokens(texts if normalized else [normalize_text(t) for t in texts], self._cache)

    def shingle_hashes(self, toks: _Tokens) -> tuple[np.ndarray, np.ndarray]:
        """32-bit shingle hashes (the values datasketch would be updated with) and owners."""
        h64, owners = toks.windows(self.shingle_size, short_whole=True)
        return (h64 & _MASK32).astype(np.uint32), owners

    def signatures(self, toks: _Tokens) -> np.ndarray:
        """(n_texts, num_perm) uint32: per permutation, the minimum over the text's shingles."""
        values, owners = self.shingle_hashes(toks)
        n = len(toks.lens)
        out = np.empty((n, self.num_perm), dtype=np.uint32)
        if n == 0:
            return out
        mixed = _fmix32(values)
        starts = np.searchsorted(owners, np.arange(n))  # every text owns >= 1 shingle
        # Chunks end on text boundaries so each text's shingles are reduced in one piece.
        # The (num_perm x shingles) layout reduces along contiguous memory: 7x faster than
        # (shingles x num_perm).
        lo = 0
        while lo < n:
            hi = int(np.searchsorted(starts, starts[lo] + self._CHUNK_SHINGLES, side="left"))
            hi = max(hi, lo + 1)
            s0 = starts[lo]
            s1 = starts[hi] if hi < n else len(values)
            perm = np.multiply.outer(self._a, mixed[s0:s1])  # wraps modulo 2**32 on purpose
            perm += self._b[:, None]
            out[lo:hi] = np.minimum.reduceat(perm, starts[lo:hi] - s0, axis=1).T
            lo = hi
        return out


def _band_keys(sigs: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(n, bands) uint64 keys; two rows share key i when their band i values are equal
    (a 64-bit hash, so unequal bands collide with probability ~2**-64, and a collision only
    costs one extra verification)."""
    keys = np.empty((len(sigs), bands), dtype=np.uint64)
    for i in range(bands):
        h = np.full(len(sigs), _U64(((i + 1) * int(_POLY)) % 2**64), dtype=np.uint64)
        for col in sigs[:, i * rows : (i + 1) * rows].T:
            h = (h ^ col.astype(np.uint64)) * _FNV
        keys[:, i] = _fmix64(h)
    return keys


class _LshIndex:
    """Banded MinHash index with exact verification on the full signature."""

    def __init__(self, num_perm: int, threshold: float):
        self.num_perm = num_perm
        self.bands, self.rows = lsh_bands(threshold, num_perm)
        # At least this many equal positions means estimated Jaccard >= threshold.
        self.min_equal = math.ceil(threshold * num_perm - 1e-9)
        self.tables: list[dict[int, list[int]]] = [{} for _ in range(self.bands)]
        self._sigs = np.empty((0, num_perm), dtype=np.uint32)
        self._keys = np.empty((0, self.bands), dtype=np.uint64)
        self.size = 0

    def keys(self, sigs: np.ndarray) -> np.ndarray:
        return _band_keys(sigs, self.bands, self.rows)

    def add_many(self, sigs: np.ndarray, keys: np.ndarray) -> None:
        for row, key_row in enumerate(keys.tolist()):
            self.add(sigs[row], key_row)

    def add(self, sig: np.ndarray, key_row: list[int]) -> int:
        item = self.size
        if item == len(self._sigs):  # grow by doubling
            cap = max(1024, 2 * item)
            self._sigs = np.resize(self._sigs, (cap, self.num_perm))
            self._keys = np.resize(self._keys, (cap, self.bands))
        self._sigs[item] = sig
        self._keys[item] = key_row
        for table, key in zip(self.tables, key_row):
            bucket = table.get(key)
            if bucket is None:
                table[key] = [item]
            else:
                bucket.append(item)
        self.size += 1
        return item

    def best(self, sig: np.ndarray, key_row: list[int]) -> tuple[int, float] | None:
        """(item, estimated Jaccard) of the most similar indexed item at or above the
        threshold (lowest item on ties), or None."""
        lists = [t[k] for t, k in zip(self.tables, key_row) if k in t]
        if not lists:
            return None
        cands = np.unique(np.fromiter(chain.from_iterable(lists), dtype=np.int64))
        equal = np.count_nonzero(self._sigs[cands] == sig, axis=1)
        top = int(np.argmax(equal))  # first maximum = lowest item id
        if equal[top] < self.min_equal:
            return None
        return int(cands[top]), float(equal[top]) / self.num_perm


@dataclass
class _Encoded:
    """Everything the checks need about a batch of texts, computed once."""

    normalized: list[str]
    chunks: list[_Tokens]  # token hashes, _ENCODE_CHUNK texts at a time (bounded memory)
    sigs: np.ndarray
    keys: np.ndarray

    def __len__(self) -> int:
        return len(self.normalized)


_ENCODE_CHUNK = 16384


def _encode(texts: Sequence[str], hasher: MinHasher, index: _LshIndex) -> _Encoded:
    normalized = [normalize_text(t) for t in texts]
    chunks, sigs = [], []
    for lo in range(0, max(len(normalized), 1), _ENCODE_CHUNK):
        toks = hasher.tokens(normalized[lo : lo + _ENCODE_CHUNK], normalized=True)
        chunks.append(toks)
        sigs.append(hasher.signatures(toks))
    all_sigs = np.concatenate(sigs)
    return _Encoded(normalized, chunks, all_sigs, index.keys(all_sigs))
