"""A content-addressed disk cache of generation requests, so no identical call is paid twice.

The key of one prompt's request hashes the backend name, the model id, the prompt version,
the prompt (`base.prompt_key`) and every sampling parameter including the seed
(`SamplingParams.key()`). Only deterministic requests are cached: greedy ones, and sampled
ones with a seed. An unseeded sampled request is never cached, since a repeat is meant to
draw new samples.

Keys are per prompt, not per batch, which is what lets shards move: a prompt that was
generated once is served from the cache whichever shard or batch it lands in later. That is
sound because the backends make a seeded prompt's output depend on the prompt and seed, not
on its batch neighbours (hf: one random stream per prompt and sample, from `derive_seed`;
openai/vllm: a per-request seed from `derive_seed`).

Layout and safety: one JSON file per key at ``root/ab/abcdef....json``. A write goes to a
unique temporary file in the same folder and is then renamed over the target with
`os.replace`, which is atomic on POSIX filesystems: concurrent writers (threads or processes)
never interleave bytes, the last complete write wins, and a crash mid-write leaves only a
stray ``.tmp`` file, never a partial entry. A reader that still meets a damaged file (a disk
full, an OS crash before the data reached the disk, a hand edit) treats it as a miss, and
the next `put` replaces it; so does one whose completions no longer match the SHA-256
stored with them (an edit or bit rot that still parses), so a damaged entry is never
returned as data. Files are not fsynced by default (an fsync per entry costs more
than the entry); a lost entry only costs one regeneration.

What it does not do: evict (delete the folder to reclaim space), or share entries between
machines unless `root` is on a shared filesystem.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from fdd_core.backends.base import Backend, Completion, Prompt, SamplingParams, prompt_key
from fdd_core.io import atomic_write_bytes

log = logging.getLogger(__name__)

CACHE_FORMAT = 1  # bump when the entry layout or the key recipe changes
_FINISH = ("stop", "length", "error")


def request_key(
    backend_name: str,
    model_id: str,
    prompt_version: str,
    prompt: Prompt,
    params: SamplingParams,
) -> str | None:
    """The cache key of one prompt's request, or None when the request is not cacheable."""
    if not params.greedy and params.seed is None:
        return None
    payload = {
        "format": CACHE_FORMAT,
        "backend": backend_name,
        "model": model_id,
        "prompt_version": prompt_version,
        "prompt": prompt_key(prompt),
        "params": params.key(),
    }
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    writes: int = 0
    corrupt: int = 0  # damaged entries met on read (counted as misses too)


def _digest(rows: list) -> str:
    blob = json.dumps(rows, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _parse_entry(raw: bytes, key: str) -> list[Completion]:
    """Completions from an entry file; raises ValueError on anything malformed."""
    data = json.loads(raw)
    if not isinstance(data, dict) or data.get("key") != key or data.get("format") != CACHE_FORMAT:
        raise ValueError("wrong key or format")
    rows = data.get("completions")
    if not isinstance(rows, list) or not rows:
        raise ValueError("no completions")
    # Entries written before the checksum existed have none and are trusted as parsed.
    if "sha256" in data and data["sha256"] != _digest(rows):
        raise ValueError("checksum mismatch: the entry changed after it was written")
    out = []
    for row in rows:
        if not isinstance(row, dict) or not isinstance(row.get("text"), str):
            raise ValueError("completion without text")
        if row.get("finish_reason") not in _FINISH:
            raise ValueError(f"bad finish_reason {row.get('finish_reason')!r}")
        out.append(
            Completion(
                text=row["text"],
                finish_reason=row["finish_reason"],
                prompt_tokens=int(row.get("prompt_tokens", 0)),
                completion_tokens=int(row.get("completion_tokens", 0)),
            )
        )
    return out


class RequestCache:
    """One JSON file per key under `root` (see the module docstring for the guarantees)."""

    def __init__(self, root: str | Path, *, fsync: bool = False) -> None:
        self.root = Path(root).expanduser()
        self.fsync = fsync
        self._stats = CacheStats()
        self._lock = threading.Lock()

    @property
    def stats(self) -> CacheStats:
        """Counters for this instance (a copy)."""
        with self._lock:
            return CacheStats(**asdict(self._stats))

    def _count(self, **delta: int) -> None:
        with self._lock:
            for name, value in delta.items():
                setattr(self._stats, name, getattr(self._stats, name) + value)

    def path(self, key: str) -> Path:
        if len(key) < 3 or not all(c in "0123456789abcdef" for c in key):
            raise ValueError(f"cache keys are lowercase hex digests, got {key!r}")
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> list[Completion] | None:
        """The cached completions, or None on a miss (absent or damaged entry)."""
        path = self.path(key)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            self._count(misses=1)
            return None
        try:
            completions = _parse_entry(raw, key)
        except (ValueError, TypeError) as exc:  # json.JSONDecodeError is a ValueError
            log.warning(
                "request cache: ignoring damaged entry %s (%s); it will be rewritten", path, exc
            )
            self._count(misses=1, corrupt=1)
            return None
        self._count(hits=1)
        return completions

    def put(self, key: str, completions: list[Completion], *, meta: dict | None = None) -> None:
        """Store `completions` under `key`, atomically replacing any previous entry."""
        path = self.path(key)
        rows = [asdict(c) for c in completions]
        entry = {
            "format": CACHE_FORMAT,
            "key": key,
            "completions": rows,
            "sha256": _digest(rows),
            "meta": meta or {},
        }
        data = json.dumps(entry, ensure_ascii=False).encode("utf-8")
        atomic_write_bytes(path, data, fsync=self.fsync)
        self._count(writes=1)


def cached_generate(
    backend: Backend,
    prompts: Sequence[Prompt],
    params: SamplingParams,
    *,
    cache: RequestCache | None,
    prompt_version: str = "",
    usage: dict[str, int] | None = None,
) -> list[list[Completion]]:
    """`backend.generate` with a per-prompt request cache in front of it.

    Looks every prompt up, sends only the misses (each distinct prompt once) to the backend
    in one `generate` call, stores what comes back, and returns results in prompt order.
    Without a cache, or for an uncacheable (unseeded sampled) request, it is a plain call.
    Completions whose finish_reason is "error" are returned but not stored, so a failed
    request is retried next time.

    `usage`, when given, is a counter this call adds to (see `count_usage`): prompts sent to
    the backend, their prompt and completion tokens, and prompts served from the cache.
    """
    if cache is None or not prompts:
        return count_usage(usage, backend.generate(prompts, params))
    keys = [request_key(backend.name, backend.model_id, prompt_version, p, params) for p in prompts]
    if keys[0] is None:  # the params alone decide cacheability: all or none
        return count_usage(usage, backend.generate(prompts, params))
    results: list[list[Completion] | None] = [None] * len(prompts)
    todo: dict[str, list[int]] = {}  # key -> every position holding that prompt
    for i, key in enumerate(keys):
        if key in todo:  # a repeat of a prompt already being generated
            todo[key].append(i)
            continue
        hit = cache.get(key)
        if hit is not None and len(hit) == params.n:
            results[i] = hit
            if usage is not None:
                usage["cache_hits"] = usage.get("cache_hits", 0) + 1
        else:
            todo[key] = [i]
    if todo:
        miss_keys = list(todo)
        meta = {
            "backend": backend.name,
            "model": backend.model_id,
            "prompt_version": prompt_version,
        }
        try:
            generated = backend.generate([prompts[todo[k][0]] for k in miss_keys], params)
        except Exception as exc:
            # An interrupted call (a shard's time limit, fdd_core.deadline) hands back what
            # it finished: keep those answers, so a retry pays only for the rest.
            partial = getattr(exc, "partial", None)
            if isinstance(partial, list) and len(partial) == len(miss_keys):
                done = [(k, c) for k, c in zip(miss_keys, partial) if c]
                for key, completions in done:
                    _store(cache, key, completions, meta, params.n)
                count_usage(usage, [c for _, c in done])
            raise
        if len(generated) != len(miss_keys):
            raise RuntimeError(
                f"backend {backend.name} returned {len(generated)} results for "
                f"{len(miss_keys)} prompts"
            )
        for key, completions in zip(miss_keys, generated):
            _store(cache, key, completions, meta, params.n)
            for i in todo[key]:
                results[i] = completions
        count_usage(usage, generated)
    return results  # type: ignore[return-value]


def _store(cache: RequestCache, key: str, completions: list[Completion], meta, n: int) -> None:
    """Keep a finished answer; one with a failed sample is left out (retried next time)."""
    if (
        completions
        and len(completions) == n
        and all(c.finish_reason != "error" for c in completions)
    ):
        cache.put(key, completions, meta=meta)


USAGE_KEYS = ("requests", "prompt_tokens", "completion_tokens", "cache_hits")


def count_usage(
    usage: dict[str, int] | None, generated: list[list[Completion]]
) -> list[list[Completion]]:
    """Add what the backend was asked for to `usage`; returns `generated` unchanged.

    One request per prompt (asking its n samples); its prompt tokens are counted once (the
    backends repeat a request's prompt tokens on each of its completions), its completion
    tokens summed over the samples. A backend that falls back to one request per sample
    pays the prompt n times; that extra is not seen here.
    """
    if usage is None:
        return generated
    for key in USAGE_KEYS:
        usage.setdefault(key, 0)
    for samples in generated:
        usage["requests"] += 1
        if samples:
            usage["prompt_tokens"] += max(c.prompt_tokens for c in samples)
            usage["completion_tokens"] += sum(c.completion_tokens for c in samples)
    return generated
