"""Filtering of teacher-written questions before labelling: sanity, decontamination, dedup.

`filter_problems` runs these checks on each candidate, in this order, and drops it for the
first one that fails (every drop is counted by reason):

1. ``malformed``: not text, empty, no letter, no digit (a math word problem needs numbers),
   more than 10 % non-printable characters, or an obvious model artifact (a code fence,
   a chat-template token, a leading ``Answer:`` / ``def `` ..., an unfilled ``{placeholder}``).
2. ``too_short`` / ``too_long``: stripped length outside ``[cfg.min_chars, cfg.max_chars]``.
3. ``contaminated_ngram``: shares a word n-gram (``n = cfg.ngram_n``) with a test question of
   any configured benchmark; a test question shorter than n words counts as one n-gram of
   its own length, so a candidate that contains it whole is contaminated.
   ``contaminated_near``: estimated Jaccard similarity to a test question at or above
   ``cfg.near_dup_threshold``. Both run only when ``cfg.decontaminate`` is on. They come
   before the duplicate checks so that a copy of a test question is reported as
   contamination even when it also duplicates something.
4. ``duplicate_exact``: same `normalize_text` form as a question already in the dataset or
   an earlier kept candidate.
5. ``duplicate_near``: estimated Jaccard similarity at or above the threshold to a question
   already in the dataset or an earlier kept candidate. Candidates are processed in input
   order, so of two near duplicates the first one is kept.

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

What this does not catch: paraphrases that reorder sentences or reword much of a question
(shingle Jaccard falls below the threshold); one changed word in a question of fewer than
29 words (3-word shingles: Jaccard (w-5)/(w+1) < 0.8); test questions rewritten with new
numbers *and* new wording in every 13-word span; leakage through translation or answer
reuse. The estimated Jaccard has a standard error of about ``sqrt(J(1-J)/num_perm)``
(0.04 at J=0.88, 64 permutations), so pairs near the threshold fall on either side
(bench/bench_filter.py: 68 % of planted pairs caught at true Jaccard 0.80-0.85, 95 % at
0.85-0.90, > 99 % above 0.90). The no-digit rule also drops questions that spell their
numbers out (1.8 % of GSM8K train questions have no digit).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import chain
from typing import Literal

import numpy as np

from fdd_core.config import FilteringConfig
from fdd_core.schemas import Problem, normalize_text

DropReason = Literal[
    "malformed",
    "too_short",
    "too_long",
    "duplicate_exact",
    "duplicate_near",
    "contaminated_ngram",
    "contaminated_near",
]
DROP_REASONS: tuple[str, ...] = DropReason.__args__  # type: ignore[attr-defined]
MAX_EXAMPLES_PER_REASON = 3
MINHASH_SEED = 1  # datasketch's default seed: our permutations are its permutations

# ----------------------------------------------------------------------------- sanity checks

_MAX_NONPRINTABLE_SHARE = 0.1
# Strings that never belong in a word problem but often leak out of a model's completion.
_ARTIFACT_SUBSTRINGS = ("```", "<|", "|>", "</s>", "<s>", "[inst]", "[/inst]")  # lower case
_ARTIFACT_PREFIXES = (
    "answer:",
    "solution:",
    "program:",
    "def ",
    "import ",
    "ans =",
    "ans=",
    "print(",
)
_PLACEHOLDER = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]*\}")  # an unfilled prompt slot
_TOKEN = re.compile(r"\w+(?:[.,'/:]\w+)*")
_LETTER = re.compile(r"[^\W\d_]")
_DIGIT = re.compile(r"\d")


def basic_check(question: object, cfg: FilteringConfig) -> str | None:
    """The sanity and length checks: a drop reason, or None when the text may go on."""
    if not isinstance(question, str):
        return "malformed"
    text = question.strip()
    if not text or not _LETTER.search(text) or not _DIGIT.search(text):
        return "malformed"
    if _nonprintable_share(text) > _MAX_NONPRINTABLE_SHARE:
        return "malformed"
    lowered = text.lower()
    if any(s in lowered for s in _ARTIFACT_SUBSTRINGS):
        return "malformed"
    if lowered.startswith(_ARTIFACT_PREFIXES) or _PLACEHOLDER.search(text):
        return "malformed"
    if len(text) < cfg.min_chars:
        return "too_short"
    if len(text) > cfg.max_chars:
        return "too_long"
    return None


def _nonprintable_share(text: str) -> float:
    if text.isprintable() and "\ufffd" not in text:  # the common case, checked in C
        return 0.0
    bad = sum(1 for c in text if c == "\ufffd" or (not c.isprintable() and c not in "\n\t\r"))
    return bad / len(text)


def tokenize(text: str) -> list[str]:
    """Word tokens of the normalised text; punctuation between words is dropped."""
    return _TOKEN.findall(normalize_text(text))


# ----------------------------------------------------------------------------- hashing

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

    def may_collide(self, keys: np.ndarray) -> np.ndarray:
        """Per row of `keys`: does some band key also occur in the index or in another row?

        A row for which this is False can match nothing indexed now, nor any other row,
        so the per-row lookup can be skipped (one vectorised pass instead of n lookups).
        """
        out = np.zeros(len(keys), dtype=bool)
        for b in range(self.bands):
            both = np.concatenate((self._keys[: self.size, b], keys[:, b]))
            _, inverse, counts = np.unique(both, return_inverse=True, return_counts=True)
            out |= counts[inverse[self.size :]] > 1
        return out


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


# ----------------------------------------------------------------------------- decontamination


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


# ----------------------------------------------------------------------------- deduplication


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


# ----------------------------------------------------------------------------- the filter


@dataclass
class FilterResult:
    kept: list[Problem]
    dropped: dict[str, int]  # every DropReason, zero when nothing was dropped for it
    examples: dict[str, list[str]]  # up to MAX_EXAMPLES_PER_REASON dropped questions a reason
    by_benchmark: dict[str, int] = field(default_factory=dict)  # contamination drops
    # Per candidate, in input order: the drop reason (None: kept) and, for contamination,
    # the benchmark (the run report's per-candidate verdicts).
    reasons: list[str | None] = field(default_factory=list)
    benchmarks: list[str | None] = field(default_factory=list)

    @property
    def n_dropped(self) -> int:
        return sum(self.dropped.values())


def filter_problems(
    candidates: Sequence[Problem],
    *,
    existing: Sequence[str],
    test_sets: Mapping[str, Sequence[str]],
    cfg: FilteringConfig,
) -> FilterResult:
    """Keep the candidates that pass every check (see the module docstring), in input order."""
    reasons: list[str | None] = [basic_check(p.question, cfg) for p in candidates]
    benchmarks: list[str | None] = [None] * len(candidates)
    alive = [i for i, r in enumerate(reasons) if r is None]

    dedup = Deduplicator(existing, cfg)
    enc = _encode([candidates[i].question for i in alive], dedup.hasher, dedup.index)
    if cfg.decontaminate and any(len(v) for v in test_sets.values()):
        decon = Decontaminator(test_sets, cfg)
        for row, hit in enumerate(decon._check_encoded(enc)):
            if hit is not None:
                reasons[alive[row]], benchmarks[alive[row]] = hit
    rows = [row for row, i in enumerate(alive) if reasons[i] is None]
    for row, reason in zip(rows, dedup._check_and_add_rows(enc, rows)):
        reasons[alive[row]] = reason
    return _summarize(candidates, reasons, benchmarks)


def _summarize(
    candidates: Sequence[Problem], reasons: list[str | None], benchmarks: list[str | None]
) -> FilterResult:
    dropped = dict.fromkeys(DROP_REASONS, 0)
    examples: dict[str, list[str]] = {r: [] for r in DROP_REASONS}
    kept = []
    for problem, reason in zip(candidates, reasons):
        if reason is None:
            kept.append(problem)
            continue
        dropped[reason] += 1
        if len(examples[reason]) < MAX_EXAMPLES_PER_REASON:
            text = problem.question if isinstance(problem.question, str) else repr(problem.question)
            examples[reason].append(text[:300])
    by_benchmark = dict(sorted(Counter(b for b in benchmarks if b is not None).items()))
    return FilterResult(
        kept,
        dropped,
        {r: v for r, v in examples.items() if v},
        by_benchmark,
        list(reasons),
        list(benchmarks),
    )


# ----------------------------------------------------------------------------- leakage analysis


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


__all__ = [
    "DROP_REASONS",
    "Decontaminator",
    "Deduplicator",
    "DropReason",
    "FilterResult",
    "MinHasher",
    "basic_check",
    "filter_problems",
    "lsh_bands",
    "max_similarity_to",
    "tokenize",
]
