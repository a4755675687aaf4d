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

Layout: `checks` (sanity and length checks, the tokenizer), `minhash` (signatures and the
LSH index), `decontam` (`Decontaminator`), `dedup` (`Deduplicator`, with the kept index in
numpy arrays), `pipeline` (`filter_problems`; `filter_stream` for inputs too large to hold;
`FilterResult`), `similarity` (`max_similarity_to`, for the leakage analysis).
Import from `fdd_core.filtering`; the names below are its public surface.
"""

from __future__ import annotations

from fdd_core.filtering.checks import basic_check, tokenize
from fdd_core.filtering.decontam import Decontaminator
from fdd_core.filtering.dedup import Deduplicator
from fdd_core.filtering.minhash import MinHasher, lsh_bands
from fdd_core.filtering.pipeline import (
    DROP_REASONS,
    DropReason,
    FilterResult,
    filter_problems,
    filter_stream,
)
from fdd_core.filtering.similarity import max_similarity_to

__all__ = [
    "DROP_REASONS",
    "Decontaminator",
    "Deduplicator",
    "DropReason",
    "FilterResult",
    "MinHasher",
    "basic_check",
    "filter_problems",
    "filter_stream",
    "lsh_bands",
    "max_similarity_to",
    "tokenize",
]
