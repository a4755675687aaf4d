"""The request cache: keys, damaged entries, concurrent writers, and the real hf backend."""

from __future__ import annotations

import json
import multiprocessing
import os
import threading
from dataclasses import dataclass, field

import pytest

from fdd_core.backends.base import Completion, SamplingParams
from fdd_core.backends.cache import RequestCache, cached_generate, request_key

SEEDED = SamplingParams(n=2, temperature=0.7, seed=3, max_tokens=8)
UNSEEDED = SamplingParams(n=2, temperature=0.7, max_tokens=8)
GREEDY = SamplingParams(max_tokens=8)


@dataclass
class CountingBackend:
    """A test double: deterministic completions, and a record of every generate call."""

    name: str = "fake"
    model_id: str = "fake-model"
    calls: list = field(default_factory=list)
    fail_prompts: tuple = ()

    def generate(self, prompts, params):
        self.calls.append(list(prompts))
        out = []
        for p in prompts:
            reason = "error" if p in self.fail_prompts else "stop"
            out.append(
                [Completion(f"{p}|{params.seed}|{j}", reason, 1, 1) for j in range(params.n)]
            )
        return out

    def close(self):
        pass


def key(prompt="q", params=SEEDED, version="v1", model="m", backend="hf"):
    return request_key(backend, model, version, prompt, params)


# --------------------------------------------------------------------------- keys


def test_unseeded_sampling_is_never_cacheable_greedy_is():
    assert key(params=UNSEEDED) is None
    assert key(params=GREEDY) is not None
    assert key(params=SEEDED) is not None


def test_every_key_field_matters():
    base = key()
    assert key() == base  # stable
    assert len(base) == 64 and all(c in "0123456789abcdef" for c in base)
    variants = [
        key(params=SamplingParams(n=2, temperature=0.7, seed=4, max_tokens=8)),  # seed
        key(version="v2"),  # prompt version
        key(model="m2"),
        key(backend="openai"),
        key(prompt="q2"),
        key(prompt=[{"role": "user", "content": "q"}]),  # chat vs text
        key(params=SamplingParams(n=2, temperature=0.7, seed=3, max_tokens=9)),
        key(params=SamplingParams(n=2, temperature=0.7, seed=3, max_tokens=8, stop=["x"])),
        key(params=SamplingParams(n=3, temperature=0.7, seed=3, max_tokens=8)),
    ]
    assert base not in variants and len(set(variants)) == len(variants)


# --------------------------------------------------------------------------- store


def test_put_get_roundtrip_and_stats(tmp_path):
    cache = RequestCache(tmp_path)
    k = key()
    assert cache.get(k) is None
    completions = [Completion("a", "stop", 3, 1), Completion("b ü", "length", 3, 8)]
    cache.put(k, completions)
    assert cache.get(k) == completions
    assert RequestCache(tmp_path).get(k) == completions  # another instance, same folder
    st = cache.stats
    assert (st.hits, st.misses, st.writes) == (1, 1, 1)
    assert (tmp_path / k[:2] / f"{k}.json").is_file()


def test_keys_must_be_hex_digests(tmp_path):
    with pytest.raises(ValueError, match="hex"):
        RequestCache(tmp_path).get("../../etc/passwd")


def test_truncated_file_is_a_miss_and_gets_rewritten(tmp_path):
    cache = RequestCache(tmp_path)
    backend = CountingBackend()
    cached_generate(backend, ["q"], SEEDED, cache=cache, prompt_version="v1")
    path = cache.path(request_key("fake", "fake-model", "v1", "q", SEEDED))
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])  # a crash that lost the tail
    assert cache.get(path.stem) is None
    assert cache.stats.corrupt == 1
    out = cached_generate(backend, ["q"], SEEDED, cache=cache, prompt_version="v1")
    assert len(backend.calls) == 2  # regenerated
    assert json.loads(path.read_bytes())["completions"][0]["text"] == out[0][0].text
    assert cache.get(path.stem) == out[0]


@pytest.mark.parametrize(
    "content",
    [b"", b"null", b"[]", b'{"format": 1, "key": "0000", "completions": []}', b"\xff\xfe"],
)
def test_damaged_or_foreign_entries_are_misses(tmp_path, content):
    cache = RequestCache(tmp_path)
    k = key()
    cache.path(k).parent.mkdir(parents=True)
    cache.path(k).write_bytes(content)
    assert cache.get(k) is None


def test_failed_write_leaves_old_entry_and_no_temp_file(tmp_path, monkeypatch):
    cache = RequestCache(tmp_path)
    k = key()
    cache.put(k, [Completion("old")])

    def crash(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        cache.put(k, [Completion("new")])
    monkeypatch.undo()
    assert cache.get(k) == [Completion("old")]
    assert [p.name for p in cache.path(k).parent.iterdir()] == [f"{k}.json"]


def test_stray_temp_file_from_a_killed_writer_is_ignored(tmp_path):
    cache = RequestCache(tmp_path)
    k = key()
    cache.path(k).parent.mkdir(parents=True)
    (cache.path(k).parent / f".{k[:16]}.abc.tmp").write_text('{"partial": ')
    assert cache.get(k) is None
    cache.put(k, [Completion("x")])
    assert cache.get(k) == [Completion("x")]


# --------------------------------------------------------------------------- concurrency

VERSIONS = 5


def _entry(k: str, writer: int, version: int) -> list[Completion]:
    # large enough that a torn write would be visible, and recognisable when read back
    return [Completion(f"{k}:{writer}:{version}:" + "x" * 20_000, "stop", writer, version)]


def _write_many(root: str, keys: list[str], writer: int) -> None:
    cache = RequestCache(root)
    for version in range(VERSIONS):
        for k in keys:
            cache.put(k, _entry(k, writer, version))


def _check_all(cache: RequestCache, keys: list[str], writers: int) -> None:
    valid = {
        k: {tuple(_entry(k, w, v)) for w in range(writers) for v in range(VERSIONS)} for k in keys
    }
    for k in keys:
        got = cache.get(k)
        assert got is not None and tuple(got) in valid[k]
    leftovers = [p for p in cache.root.rglob("*") if p.is_file() and p.suffix != ".json"]
    assert leftovers == []


def test_concurrent_thread_writers_and_readers(tmp_path):
    keys = [key(prompt=f"q{i}") for i in range(12)]
    writers = 6
    cache = RequestCache(tmp_path)
    torn: list = []

    def read_loop(stop: threading.Event) -> None:
        valid = {
            k: {tuple(_entry(k, w, v)) for w in range(writers) for v in range(VERSIONS)}
            for k in keys
        }
        while not stop.is_set():
            for k in keys:
                got = cache.get(k)  # a reader sees nothing or a whole entry, never a torn one
                if got is not None and tuple(got) not in valid[k]:
                    torn.append(k)

    stop = threading.Event()
    reader = threading.Thread(target=read_loop, args=(stop,))
    reader.start()
    threads = [
        threading.Thread(target=_write_many, args=(str(tmp_path), keys, w)) for w in range(writers)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    reader.join()
    assert torn == []
    assert cache.stats.corrupt == 0
    _check_all(cache, keys, writers)


def test_concurrent_process_writers(tmp_path):
    keys = [key(prompt=f"p{i}") for i in range(12)]
    writers = 4
    # spawn, not fork: forking a test process that runs other threads (Prefect, torch)
    # can leave the child with a held lock.
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_write_many, args=(str(tmp_path), keys, w)) for w in range(writers)]
    reader = RequestCache(tmp_path)
    for p in procs:
        p.start()
    while any(p.is_alive() for p in procs):  # read while the other processes write
        for k in keys:
            reader.get(k)
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0] * writers
    assert reader.stats.corrupt == 0  # never a torn entry, even mid-write
    cache = RequestCache(tmp_path)
    _check_all(cache, keys, writers)


# --------------------------------------------------------------------------- cached_generate


def test_cached_generate_sends_only_misses_and_keeps_order(tmp_path):
    cache = RequestCache(tmp_path)
    backend = CountingBackend()
    first = cached_generate(backend, ["a", "b", "c"], SEEDED, cache=cache, prompt_version="v1")
    assert backend.calls == [["a", "b", "c"]]
    # a "moved shard": c is cached, d is new; duplicates inside a call are generated once
    second = cached_generate(
        backend, ["d", "c", "d", "a"], SEEDED, cache=cache, prompt_version="v1"
    )
    assert backend.calls[-1] == ["d"]
    assert second[1] == first[2] and second[3] == first[0] and second[0] == second[2]
    assert [row[0].text.split("|")[0] for row in second] == ["d", "c", "d", "a"]
    cached_generate(backend, ["a", "b", "c", "d"], SEEDED, cache=cache, prompt_version="v1")
    assert len(backend.calls) == 2  # all hits: no backend call at all
    assert cache.stats.hits >= 6


def test_seed_and_prompt_version_changes_are_misses(tmp_path):
    cache = RequestCache(tmp_path)
    backend = CountingBackend()
    cached_generate(backend, ["a"], SEEDED, cache=cache, prompt_version="v1")
    other_seed = SamplingParams(n=2, temperature=0.7, seed=4, max_tokens=8)
    out = cached_generate(backend, ["a"], other_seed, cache=cache, prompt_version="v1")
    assert len(backend.calls) == 2 and out[0][0].text == "a|4|0"
    cached_generate(backend, ["a"], SEEDED, cache=cache, prompt_version="v2")
    assert len(backend.calls) == 3
    cached_generate(backend, ["a"], SEEDED, cache=cache, prompt_version="v1")
    assert len(backend.calls) == 3  # the original is still there


def test_unseeded_sampling_skips_the_cache(tmp_path):
    cache = RequestCache(tmp_path)
    backend = CountingBackend()
    for _ in range(2):
        cached_generate(backend, ["a", "b"], UNSEEDED, cache=cache)
    assert len(backend.calls) == 2
    assert list(tmp_path.iterdir()) == []
    assert cache.stats.hits == cache.stats.misses == 0


def test_greedy_calls_are_cached(tmp_path):
    cache = RequestCache(tmp_path)
    backend = CountingBackend()
    for _ in range(2):
        cached_generate(backend, ["a"], GREEDY, cache=cache)
    assert len(backend.calls) == 1


def test_error_completions_are_returned_but_not_stored(tmp_path):
    cache = RequestCache(tmp_path)
    backend = CountingBackend(fail_prompts=("bad",))
    out = cached_generate(backend, ["ok", "bad"], SEEDED, cache=cache)
    assert out[1][0].finish_reason == "error"
    cached_generate(backend, ["ok", "bad"], SEEDED, cache=cache)
    assert backend.calls[-1] == ["bad"]  # retried; "ok" came from the cache


def test_no_cache_is_a_plain_call():
    backend = CountingBackend()
    assert cached_generate(backend, ["a"], SEEDED, cache=None)[0][0].text == "a|3|0"
    assert cached_generate(backend, [], SEEDED, cache=None) == []


# --------------------------------------------------------------------------- real backend


@pytest.fixture(scope="module")
def hf_tiny(tiny_causal_dir):
    pytest.importorskip("torch")
    from fdd_core.backends.hf import HFBackend

    return HFBackend(str(tiny_causal_dir), batch_size=3, device="cpu", progress=False)


class Recording:
    """Wraps a real backend and records which prompts reach it."""

    def __init__(self, inner) -> None:
        self.inner, self.name, self.model_id, self.calls = inner, inner.name, inner.model_id, []

    def generate(self, prompts, params):
        self.calls.append(list(prompts))
        return self.inner.generate(prompts, params)

    def close(self) -> None:
        pass


def test_hf_backend_through_the_cache_moves_shards_for_free(hf_tiny, tmp_path):
    params = SamplingParams(n=2, temperature=1.0, seed=9, max_tokens=6)
    prompts = [f"Question {i}: how many apples does Tom have?" + " really" * i for i in range(5)]
    backend = Recording(hf_tiny)
    cache = RequestCache(tmp_path)
    first = cached_generate(backend, prompts[:3], params, cache=cache, prompt_version="v1")
    # the next shard overlaps the first: only the new prompts reach the model
    second = cached_generate(backend, prompts[2:], params, cache=cache, prompt_version="v1")
    assert backend.calls == [prompts[:3], prompts[3:]]
    assert second[0] == first[2]
    # a cached prompt equals what that prompt alone produces (per-prompt seeding)
    assert hf_tiny.generate([prompts[2]], params)[0] == first[2]
    assert hf_tiny.generate([prompts[3]], params)[0] == second[1]
    # and a fresh process-level view of the same folder serves everything
    third = cached_generate(
        backend, prompts, params, cache=RequestCache(tmp_path), prompt_version="v1"
    )
    assert len(backend.calls) == 2 and third[:3] == first and third[2:] == second
