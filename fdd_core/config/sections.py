"""The run configuration's sections: one typed pydantic tree, `RunConfig` at the top.

Every field has a default and a description, and every section forbids unknown keys.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from fdd_core.backends import registry

# The per-backend config models, re-exported here (callers import them from fdd_core.config).
from fdd_core.backends.configs import EMBEDDED_MODEL as EMBEDDED_MODEL
from fdd_core.backends.configs import HFConfig, ModelConfig, OpenAIConfig, VLLMConfig
from fdd_core.backends.configs import InProcessConfig as InProcessConfig

Strategy = Literal["fdd", "errors_only", "uniform", "complex_only", "similar_only", "none"]
STRATEGIES: tuple[str, ...] = Strategy.__args__  # type: ignore[attr-defined]


class ConfigError(ValueError):
    """A configuration problem a user can fix; the message says where and how."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class TeacherConfig(ModelConfig):
    """The teacher: writes rationales, new problems, and labels them.

    Abstract: the concrete class adds these fields to its backend's config model
    (`HFTeacherConfig`, `OpenAITeacherConfig`, ...); `TeacherConfig(...)` builds the one
    its `backend` names.
    """

    _abstract: ClassVar[bool] = True

    n_samples: int = Field(
        4,
        ge=1,
        le=256,
        description="k: programs the teacher writes per training problem (reasoning paths).",
    )
    temperature: float = Field(
        0.7, ge=0, le=5, description="Sampling temperature for rationales and new problems."
    )
    top_p: float = Field(0.95, gt=0, le=1, description="Nucleus sampling for the teacher.")
    max_tokens: int = Field(
        256, ge=1, le=32768, description="Maximum new tokens per teacher completion."
    )
    seed: int = Field(0, description="Base seed for teacher sampling (mixed with each prompt).")
    prompt_style: Literal["chat", "completion"] = Field(
        "chat",
        description="How program prompts are sent: 'chat' (system + user messages) or "
        "'completion' (the few-shot text ending in an open ```python fence; small models "
        "follow that pattern far better). Problem-writing prompts are always chat.",
    )
    request_cache: bool = Field(
        True,
        description="Cache seeded teacher calls on disk so identical calls are never paid twice.",
    )


class StudentConfig(ModelConfig):
    """The student: the small model trained each round from `model` (the base checkpoint).

    Abstract, like TeacherConfig: `StudentConfig(...)` builds `HFStudentConfig`, ...
    """

    _abstract: ClassVar[bool] = True

    max_tokens: int = Field(
        256, ge=1, le=32768, description="Maximum new tokens when the student writes a program."
    )


# The teacher and student fields: a discriminated union (on `backend`) of one config class
# per registered backend, each with the role's fields on top.
TeacherModels: Any = registry.role_union(TeacherConfig)
StudentModels: Any = registry.role_union(StudentConfig)


class DataSource(Section):
    """One problem source."""

    name: str = Field(
        "embedded",
        description="Loader to use: embedded, gsm8k, svamp, asdiv, multiarith, jsonl (or one "
        "added with fdd_core.data.register_loader).",
    )
    path: str | None = Field(
        None,
        description="Local file. Empty means: the embedded set for 'embedded', the hub for the "
        "public benchmarks (needs a network). Required for 'jsonl'.",
    )
    split: Literal["train", "test"] = Field("train", description="Split to read.")
    limit: int | None = Field(None, ge=1, description="Keep only the first N problems.")

    @field_validator("name")
    @classmethod
    def _known_loader(cls, value: str) -> str:
        from fdd_core.data import loader_names  # the loader table lives with the loaders

        names = loader_names()
        if value not in names:
            raise ValueError(f"must be one of {', '.join(repr(n) for n in names)}")
        return value

    @model_validator(mode="after")
    def _jsonl_needs_path(self) -> DataSource:
        if self.name == "jsonl" and not self.path:
            raise ValueError("a 'jsonl' source needs `path` (a file of {question, answer} rows)")
        return self


class DataConfig(Section):
    train: list[DataSource] = Field(
        default_factory=lambda: [DataSource()],
        min_length=1,
        description="Sources of the original training problems (round 0).",
    )
    strict: bool = Field(
        True, description="Fail on a malformed row; false skips and counts bad rows."
    )


class RoundsConfig(Section):
    n_rounds: int = Field(
        2, ge=0, le=100, description="R: feedback rounds after round 0 (initialization)."
    )
    stop_when_no_growth: bool = Field(
        True, description="Stop early when a round adds no new example."
    )
    grading_pool: Literal["original", "all"] = Field(
        "original",
        description="Problems the previous student is graded on: the original training "
        "problems, or every problem in the dataset so far.",
    )
    grading_mode: Literal["greedy", "sampled"] = Field(
        "greedy", description="Grade with one greedy answer, or with `grading_samples` samples."
    )
    grading_samples: int = Field(
        4, ge=1, le=64, description="m: samples per problem when grading_mode is 'sampled'."
    )
    grading_temperature: float = Field(
        0.7, gt=0, le=5, description="Temperature for sampled grading."
    )
    pass_threshold: float = Field(
        0.5,
        gt=0,
        le=1,
        description="Sampled grading: a problem is easy when this fraction of samples is right.",
    )


class SynthesisConfig(Section):
    n_complex: int = Field(
        2, ge=0, le=64, description="c: more complex variations per easy (solved) problem."
    )
    n_similar: int = Field(
        2, ge=0, le=64, description="s: new problems of similar complexity per hard problem."
    )
    max_tokens: int = Field(
        384, ge=1, le=32768, description="Maximum new tokens for a problem-writing completion."
    )
    max_parents_per_round: int | None = Field(
        None, ge=1, description="Cap on problems synthesized from per round (None: all)."
    )
    strategy: Strategy = Field(
        "fdd",
        description="Which graded problems new ones are written from: 'fdd' (complex variations "
        "of easy problems, similar ones for hard), 'errors_only' (LLM2LLM: similar problems for "
        "failed ones only), 'uniform' (random parents, fdd's mix, no feedback), 'complex_only', "
        "'similar_only' (FDD's branches alone), 'none' (no synthesis: every round's student is "
        "the one D0 trains, trained once and reused). See docs/experiments.md.",
    )
    budget: int | None = Field(
        None,
        ge=0,
        description="New problems asked of the teacher per round, spent the same way by every "
        "strategy (None: what 'fdd' asks that round, easy * n_complex + hard * n_similar).",
    )
    grade_unused: bool = Field(
        True,
        description="Grade the student even when the strategy ignores the grade ('none'), so "
        "every variant reports easy/hard counts; false skips that grading.",
    )


class LabelingConfig(Section):
    n_programs: int = Field(
        4, ge=1, le=256, description="n: teacher programs per new problem, voted on."
    )
    agreement_threshold: float = Field(
        0.5,
        gt=0,
        le=1,
        description="Accept a new problem when its majority answer has at least this share "
        "of the n programs.",
    )
    max_rationales: int = Field(
        2, ge=1, le=256, description="Keep up to this many agreeing programs as rationales."
    )


class FilteringConfig(Section):
    min_chars: int = Field(20, ge=1, description="Shorter questions are dropped as malformed.")
    max_chars: int = Field(1200, ge=1, description="Longer questions are dropped.")
    near_dup_threshold: float = Field(
        0.8,
        gt=0,
        le=1,
        description="Estimated Jaccard similarity (word shingles, MinHash LSH) at or above "
        "which a question is a near duplicate.",
    )
    num_perm: int = Field(64, ge=16, le=1024, description="MinHash permutations.")
    shingle_size: int = Field(3, ge=1, le=10, description="Words per shingle for MinHash.")
    decontaminate: bool = Field(
        True, description="Drop questions too close to any benchmark test question."
    )
    ngram_n: int = Field(
        13, ge=3, le=50, description="Word n-gram length for contamination overlap."
    )

    @model_validator(mode="after")
    def _bounds(self) -> FilteringConfig:
        if self.min_chars > self.max_chars:
            raise ValueError(
                f"min_chars ({self.min_chars}) must not exceed max_chars ({self.max_chars})"
            )
        return self


class SandboxConfig(Section):
    timeout_s: float = Field(5.0, gt=0, le=600, description="Wall-clock limit per program.")
    cpu_s: int = Field(5, ge=1, le=600, description="CPU-time limit per program (RLIMIT_CPU).")
    memory_mb: int = Field(
        512, ge=64, le=65536, description="Address-space limit per program (RLIMIT_AS)."
    )
    max_output_bytes: int = Field(
        16384, ge=256, description="Captured stdout/stderr per program; the rest is dropped."
    )
    max_workers: int | None = Field(
        None, ge=1, description="Programs run in parallel (None: one per CPU core)."
    )
    isolate_network: bool = Field(
        True, description="Cut the network (unshare) where the OS allows it."
    )
    rel_tol: float = Field(
        1e-4, ge=0, le=0.1, description="Relative tolerance when comparing numeric answers."
    )


class TrainingConfig(Section):
    method: Literal["full", "lora"] = Field("lora", description="Full fine-tuning or LoRA.")
    lora_r: int = Field(16, ge=1, le=1024, description="LoRA rank.")
    lora_alpha: int = Field(32, ge=1, description="LoRA alpha.")
    lora_dropout: float = Field(0.05, ge=0, lt=1, description="LoRA dropout.")
    lora_target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear", description="Modules LoRA adapts, or 'all-linear'."
    )
    epochs: float = Field(3.0, gt=0, le=100, description="Passes over the dataset.")
    max_steps: int | None = Field(
        None, ge=1, description="Stop after this many optimizer steps (overrides epochs)."
    )
    learning_rate: float = Field(2e-4, gt=0, le=1, description="Peak learning rate.")
    batch_size: int = Field(8, ge=1, le=4096, description="Examples per device batch.")
    grad_accum: int = Field(1, ge=1, le=1024, description="Gradient accumulation steps.")
    max_seq_len: int = Field(
        512, ge=16, le=32768, description="Longer examples are truncated (prompt kept)."
    )
    warmup_ratio: float = Field(0.03, ge=0, lt=1, description="Linear warm-up fraction.")
    weight_decay: float = Field(0.0, ge=0, le=1, description="AdamW weight decay.")
    group_by_length: bool = Field(
        True, description="Batch examples of similar length (no padding to a global maximum)."
    )
    padding_free: Literal["auto", "on", "off"] = Field(
        "off",
        description="Padding-free batching for causal students: each micro-batch flattened "
        "into one row without padding, position ids restarting per example, no example "
        "attending to another. 'off' (default): each batch padded to its longest row; "
        "'auto': on for causal students whose attention keeps packed examples apart "
        "(checked at start), padded otherwise; 'on': an error where it cannot run. "
        "Encoder-decoder students are always padded. Opt-in: measured 1.05-1.36x faster on "
        "CPU, with a lower peak, but not yet run on CUDA (docs/training.md).",
    )
    bf16: Literal["auto", "on", "off"] = Field(
        "auto", description="bf16 mixed precision; 'auto' turns it on for CUDA with bf16."
    )
    gradient_checkpointing: Literal["auto", "on", "off"] = Field(
        "auto", description="Gradient checkpointing; 'auto' turns it on for CUDA."
    )
    seed: int = Field(0, description="Training seed (data order, init of LoRA weights).")
    report_to: Literal["none", "tensorboard", "mlflow", "wandb"] = Field(
        "none",
        description="Also log the loss per step to this tracker through accelerate "
        "(its package is imported only when chosen; logs go under the student folder).",
    )
    # How the training runs, not what it computes: left out of training_config_hash.
    isolation: Literal["process", "inline"] = Field(
        "process",
        description="'process': train in a child process that the task starts, watches and "
        "stops (timeouts, Ctrl-C and out-of-memory stay in the child; its memory is returned "
        "when it ends). 'inline': in the task's own process.",
    )
    processes: int | Literal["auto"] = Field(
        "auto",
        description="Training processes (data parallel, via torchrun) when isolation is "
        "'process': 'auto' takes every visible GPU when there are several, else one; a number "
        "forces it (on CPU, gloo).",
    )
    timeout_s: float | None = Field(
        None,
        gt=0,
        description="Wall-clock limit for one student's training (isolation 'process'): the "
        "child processes are stopped when it passes and the task fails with TimeoutError. "
        "Empty: no limit.",
    )

    @field_validator("processes")
    @classmethod
    def _positive_processes(cls, v):
        if isinstance(v, int) and not 1 <= v <= 1024:
            raise ValueError(f"must be 'auto' or a number from 1 to 1024, got {v}")
        return v


class EvaluationConfig(Section):
    benchmarks: list[str] = Field(
        default_factory=lambda: ["embedded"],
        description="Benchmarks each student is scored on: gsm8k, svamp, asdiv, multiarith, "
        "embedded, or a path to a JSONL file of {question, answer} rows.",
    )
    data_paths: dict[str, str] = Field(
        default_factory=dict,
        description="Local files for benchmarks, e.g. {gsm8k: data/gsm8k/test.jsonl}; "
        "benchmarks without one come from the hub (needs a network).",
    )
    limit: int | None = Field(None, ge=1, description="Score only the first N problems.")
    measure_base: bool = Field(
        False,
        description="Also benchmark the untrained base student in round 0 (the reference "
        "line of the run report's accuracy plot).",
    )
    batch_size: int = Field(
        64,
        ge=1,
        le=4096,
        description="Problems sent to the student per generate call; their programs run in "
        "the sandbox while the next batch generates.",
    )


class OrchestrationConfig(Section):
    shard_size: int = Field(
        200,
        ge=1,
        le=100_000,
        description="Prompts per generation shard; the unit of caching and retry.",
    )
    task_runner: Literal["threads", "dask", "ray"] = Field(
        "threads", description="Prefect task runner for mapped shards."
    )
    max_workers: int = Field(
        2, ge=1, le=1024, description="Threads for the default task runner (bounded)."
    )
    runner_address: str | None = Field(
        None, description="Address of an existing Dask scheduler or Ray cluster (else local)."
    )
    task_retries: int = Field(
        3,
        ge=0,
        le=20,
        description="Retries of a shard task after a transient error (at least; more while "
        "retry_window_s lasts). Permanent errors are never retried.",
    )
    retry_delay_s: float = Field(
        2.0, ge=0, description="Base delay of the exponential backoff between task retries."
    )
    retry_max_delay_s: float = Field(
        60.0, ge=0, description="Cap on one backoff delay between task retries."
    )
    retry_window_s: float = Field(
        1200.0,
        ge=0,
        le=7 * 24 * 3600,
        description="How long a shard keeps retrying a transient error (e.g. a teacher server "
        "being restarted) after its first failure before the round fails: the backoff delays "
        "add up to at least this.",
    )
    shard_timeout_s: float | None = Field(
        4 * 3600.0,
        gt=0,
        description="Wall-clock limit on one attempt of a generation shard (rationales, "
        "grade, synthesize, label), enforced inside the work (docs/reliability.md): a shard "
        "waiting on a teacher server that never answers is stopped and retried; in-process "
        "decoding past it fails the shard. A guard against hangs, not a speed target: the "
        "default is generous; lower it where a shard takes minutes. null: no limit.",
    )


class StorageConfig(Section):
    root: str = Field("runs", description="Folder holding every run (relative to the cwd).")
    run_name: str | None = Field(
        None,
        description="Run folder name; None derives it from the config hash. A template with "
        "{date}, {time}, {datetime} (the run's scheduled start, UTC) or {hash} gives each "
        "scheduled run a folder of its own (fdd_core/schedules.py).",
    )
    cache_dir: str | None = Field(
        None,
        description="Cache for converted models and teacher requests (None: the user's cache "
        "dir, ~/.cache/fdd).",
    )
    result_storage: str | None = Field(
        None,
        description="Where Prefect persists task results: a folder or fsspec URL "
        "(None: <run folder>/prefect-results).",
    )
    shared_round0: str | None = Field(
        None,
        description="Folder where round 0 is computed once for every run whose round-0 inputs "
        "are the same (runs that differ only in synthesis.* or rounds.*); `fdd sweep` sets it "
        "to <experiment>/shared. None: round 0 lives in the run folder.",
    )

    @field_validator("run_name")
    @classmethod
    def _run_name_template(cls, v: str | None) -> str | None:
        from fdd_core.schedules import check_run_name

        return None if v is None else check_run_name(v)


class RunConfig(Section):
    """Everything one FDD run needs. `fdd run CONFIG --set a.b=c` builds one."""

    teacher: TeacherModels = Field(
        default_factory=TeacherConfig,
        description="The teacher model; `backend` picks its config (see fdd_core.backends).",
    )
    student: StudentModels = Field(
        default_factory=StudentConfig,
        description="The student model; `backend` picks its config (see fdd_core.backends).",
    )
    data: DataConfig = Field(default_factory=DataConfig)
    rounds: RoundsConfig = Field(default_factory=RoundsConfig)
    synthesis: SynthesisConfig = Field(default_factory=SynthesisConfig)
    labeling: LabelingConfig = Field(default_factory=LabelingConfig)
    filtering: FilteringConfig = Field(default_factory=FilteringConfig)
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    orchestration: OrchestrationConfig = Field(default_factory=OrchestrationConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)

    @model_validator(mode="after")
    def _cross_checks(self) -> RunConfig:
        if self.labeling.max_rationales > self.labeling.n_programs:
            raise ValueError(
                f"labeling.max_rationales ({self.labeling.max_rationales}) cannot exceed "
                f"labeling.n_programs ({self.labeling.n_programs})"
            )
        if (
            self.teacher.temperature == 0
            and max(self.teacher.n_samples, self.labeling.n_programs) > 1
        ):
            raise ValueError(
                "teacher.temperature is 0 (greedy), which gives one program per prompt, but "
                f"teacher.n_samples={self.teacher.n_samples} and labeling.n_programs="
                f"{self.labeling.n_programs} ask for several: set teacher.temperature > 0"
            )
        return self

    def config_hash(self) -> str:
        """Stable hash of every setting (used in cache keys and dataset manifests).

        The teacher and student enter with every field of the former flat model config
        (a field their backend does not take at its old default), so the hash, and with it
        the default run folder name, is what it was before configs were split per backend.
        """
        data = self.model_dump(mode="json")
        for who in ("teacher", "student"):
            data[who] = {**_FLAT_MODEL_DEFAULTS, **data[who]}
        # How long to wait is not what to compute (and the field came later: leaving it
        # out keeps every earlier run's folder name).
        for section, name in _UNHASHED:
            data[section].pop(name, None)
        blob = json.dumps(data, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


# Settings that never change a result: out of the config hash (and the task cache keys).
_UNHASHED = (("orchestration", "shard_timeout_s"),)

# Every field of the built-in backends' configs at its default: the former flat ModelConfig.
_FLAT_MODEL_DEFAULTS: dict[str, Any] = {
    name: field.default
    for cls in (HFConfig, OpenAIConfig, VLLMConfig)
    for name, field in cls.model_fields.items()
    if name != "backend"
}


def rebuild_model_configs() -> None:
    """Rebuild the run config's teacher and student unions from the backend table
    (called by `fdd_core.backends.registry.register_backend`)."""
    global TeacherModels, StudentModels
    TeacherModels = registry.role_union(TeacherConfig)
    StudentModels = registry.role_union(StudentConfig)
    # The field keeps its discriminator (metadata); only the members change.
    RunConfig.model_fields["teacher"].annotation = registry.role_members(TeacherConfig)
    RunConfig.model_fields["student"].annotation = registry.role_members(StudentConfig)
    RunConfig.model_rebuild(force=True)
