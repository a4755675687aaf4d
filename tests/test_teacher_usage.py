"""Teacher accounting: requests, tokens and request-cache hits per stage, ready for run.json."""

from __future__ import annotations

from fdd_core.backends.base import Completion
from fdd_core.backends.cache import RequestCache, cached_generate
from fdd_core.config import SandboxConfig, TeacherConfig
from fdd_core.reports import RoundResult
from fdd_core.sandbox import Sandbox
from fdd_core.schemas import DatasetRef, Problem
from fdd_core.stages import merge_stats, split_teacher_usage, write_rationales
from tests.servers.scripted_teacher import answer, numbers_in, world_question
from tests.test_stages import ScriptedBackend


class TokenBackend(ScriptedBackend):
    """The scripted double, reporting usage like the openai backend: prompt tokens repeated
    on each completion of a request, 5 completion tokens per sample."""

    def generate(self, prompts, params):
        self.calls.append((len(prompts), params))
        return [
            [
                Completion(
                    text=answer(self._text(p), params.seed, j),
                    prompt_tokens=11,
                    completion_tokens=5,
                )
                for j in range(params.n)
            ]
            for p in prompts
        ]


def _problems(n):
    qs = [world_question(f"u{i}", 2) for i in range(n)]
    return [Problem.create(q, sum(numbers_in(q))) for q in qs]


def test_cached_generate_counts_requests_tokens_and_hits(tmp_path):
    from fdd_core.backends.base import SamplingParams

    backend, cache = TokenBackend(), RequestCache(tmp_path)
    params = SamplingParams(n=3, temperature=0.7, max_tokens=16, seed=1)
    prompts = ["a", "b", "a", "c"]  # "a" twice: generated once
    first: dict[str, int] = {}
    cached_generate(backend, prompts, params, cache=cache, usage=first)
    assert first == {"requests": 3, "prompt_tokens": 33, "completion_tokens": 45, "cache_hits": 0}
    again: dict[str, int] = {}
    cached_generate(backend, prompts, params, cache=cache, usage=again)
    assert again == {"cache_hits": 4}  # every position served from the cache, nothing sent
    plain: dict[str, int] = {}
    cached_generate(backend, ["x", "y"], params, cache=None, usage=plain)
    assert plain["requests"] == 2 and plain["completion_tokens"] == 30


def test_stage_usage_survives_shard_merge_and_lands_in_the_round_record(tmp_path):
    teacher = TokenBackend()
    tcfg = TeacherConfig(backend="openai", base_url="http://x/v1", n_samples=2)
    sandbox = Sandbox(SandboxConfig(max_workers=1, isolate_network=False))
    cache = RequestCache(tmp_path / "cache")
    try:
        shards = [
            write_rationales(chunk, teacher, tcfg, sandbox, cache=cache)[1]
            for chunk in (_problems(3), _problems(5)[3:])
        ]
        _, rerun = write_rationales(_problems(3), teacher, tcfg, sandbox, cache=cache)
    finally:
        sandbox.close()
    stats, usage = split_teacher_usage({"rationales": merge_stats(shards), "grade": {"easy": 1}})
    assert usage == {
        "rationales": {
            "requests": 5,
            "prompt_tokens": 55,
            "completion_tokens": 50,
            "cache_hits": 0,
        }
    }
    assert not any(k.startswith("teacher:") for k in stats["rationales"])
    assert stats["grade"] == {"easy": 1} and stats["rationales"]["verified"] > 0
    assert split_teacher_usage({"rationales": rerun})[1]["rationales"]["cache_hits"] == 3
    record = RoundResult(
        round=0,
        dataset=DatasetRef(path=str(tmp_path), version_id="v", n_rows=0),
        teacher_usage=usage,
    )
    assert RoundResult.model_validate_json(record.model_dump_json()).teacher_usage == usage
