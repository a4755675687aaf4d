"""The run configuration: one typed pydantic tree, loaded from YAML plus `--set` overrides.

Every field has a default and a description, every section forbids unknown keys, and
`load_config` turns any problem into a `ConfigError` naming the field, the value it got and
what is allowed, before any work starts.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

EMBEDDED_MODEL = "smollm2-135m-instruct"
BENCHMARK_NAMES = ("gsm8k", "svamp", "asdiv", "multiarith", "embedded")


class ConfigError(ValueError):
    """A configuration problem a user can fix; the message says where and how."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(Section):
    """Where a model comes from and which backend runs it."""

    backend: Literal["hf", "openai", "vllm"] = Field(
        "hf",
        description="Inference backend: 'hf' (transformers, in process, CPU or GPU), "
        "'openai' (any OpenAI-compatible HTTP endpoint, e.g. `vllm serve`), "
        "'vllm' (in-process vLLM on a GPU worker).",
    )
    model: str = Field(
        EMBEDDED_MODEL,
        description="Model name: 'smollm2-135m-instruct' (embedded, no network), a local "
        "checkpoint folder, a hub id (needs a network) or, for 'openai', the served model name.",
    )
    adapter: str | None = Field(
        None, description="Optional LoRA adapter folder applied on top of `model` (hf, vllm)."
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Device for in-process backends; 'auto' picks CUDA when present."
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Weights dtype; 'auto' is bfloat16 on GPU and float32 on CPU."
    )
    batch_size: int = Field(
        64,
        ge=1,
        le=4096,
        description="Sequences per forward batch (hf): batch_size // n prompts, each with its "
        "n samples (a prompt's samples are never split). Bounds memory for greedy and sampled "
        "calls alike.",
    )
    base_url: str | None = Field(
        None,
        description="Base URL of an OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1 "
        "(openai backend only).",
    )
    api_key_env: str = Field(
        "OPENAI_API_KEY",
        description="Name of the environment variable holding the API key. The key itself "
        "never goes in a config file.",
    )
    endpoint: Literal["chat", "completions"] = Field(
        "chat", description="OpenAI API flavour: chat completions or plain completions."
    )
    max_concurrency: int = Field(
        16, ge=1, le=1024, description="Requests in flight at once (openai backend)."
    )
    request_timeout_s: float = Field(
        120.0, gt=0, description="Per-request timeout in seconds (openai backend)."
    )
    max_retries: int = Field(
        6, ge=0, le=50, description="Retries per request on transient errors (openai backend)."
    )
    gpu_memory_utilization: float = Field(
        0.85, gt=0, le=1, description="Fraction of GPU memory vLLM may take (vllm backend)."
    )
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs per model (vllm backend).")


class TeacherConfig(ModelConfig):
    """The teacher: writes rationales, new problems, and labels them."""

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
    """The student: the small model trained each round from `model` (the base checkpoint)."""

    max_tokens: int = Field(
        256, ge=1, le=32768, description="Maximum new tokens when the student writes a program."
    )


class DataSource(Section):
    """One problem source."""

    name: Literal["embedded", "gsm8k", "svamp", "asdiv", "multiarith", "jsonl"] = Field(
        "embedded", description="Loader to use."
    )
    path: str | None = Field(
        None,
        description="Local file. Empty means: the embedded set for 'embedded', the hub for the "
        "public benchmarks (needs a network). Required for 'jsonl'.",
    )
    split: Literal["train", "test"] = Field("train", description="Split to read.")
    limit: int | None = Field(None, ge=1, description="Keep only the first N problems.")

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
    task_retries: int = Field(3, ge=0, le=20, description="Retries of a failed shard task.")
    retry_delay_s: float = Field(
        2.0, ge=0, description="Base delay of the exponential backoff between task retries."
    )


class StorageConfig(Section):
    root: str = Field("runs", description="Folder holding every run (relative to the cwd).")
    run_name: str | None = Field(
        None, description="Run folder name; None derives it from the config hash."
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


class RunConfig(Section):
    """Everything one FDD run needs. `fdd run CONFIG --set a.b=c` builds one."""

    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    student: StudentConfig = Field(default_factory=StudentConfig)
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
        for who in ("teacher", "student"):
            mc: ModelConfig = getattr(self, who)
            if mc.backend == "openai" and not mc.base_url:
                raise ValueError(
                    f"{who}.backend is 'openai' but {who}.base_url is empty: give the "
                    "server's URL, e.g. http://127.0.0.1:8000/v1"
                )
        return self

    def config_hash(self) -> str:
        """Stable hash of every setting (used in cache keys and dataset manifests)."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- loading


def _format_validation_error(err: ValidationError, source: str) -> str:
    lines = [f"invalid configuration in {source}:"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        value = e.get("input")
        shown = repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            allowed = _allowed_keys(e["loc"][:-1])
            msg = "unknown field" + (f"; allowed here: {', '.join(allowed)}" if allowed else "")
            lines.append(f"  - {loc}: {msg}")
            continue
        if e["type"] == "literal_error":
            ctx = e.get("ctx", {})
            msg = f"must be one of {ctx.get('expected', '?')}"
        lines.append(f"  - {loc} = {shown}: {msg}")
    return "\n".join(lines)


def _allowed_keys(loc: tuple) -> list[str]:
    model: Any = RunConfig
    for part in loc:
        if isinstance(part, int):
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        ann = field.annotation
        args = getattr(ann, "__args__", None)
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            model = ann
        elif args and isinstance(args[0], type) and issubclass(args[0], BaseModel):
            model = args[0]
        else:
            return []
    return sorted(getattr(model, "model_fields", {}))


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        nxt = node.get(part)
        if nxt is None:
            nxt = node[part] = {}
        if not isinstance(nxt, dict):
            raise ConfigError(f"--set {dotted}: '{part}' is not a section")
        node = nxt
    node[parts[-1]] = value


def parse_override(item: str) -> tuple[str, Any]:
    """`a.b=c` -> ("a.b", yaml-parsed c). `a.b=` sets an empty string."""
    if "=" not in item:
        raise ConfigError(f"--set expects KEY=VALUE (e.g. teacher.n_samples=8), got {item!r}")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key or any(not p for p in key.split(".")):
        raise ConfigError(f"--set: bad key {key!r} in {item!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def config_from_dict(
    data: dict, overrides: list[str] | tuple[str, ...] = (), *, source: str = "<dict>"
) -> RunConfig:
    tree = json.loads(json.dumps(data))  # deep copy of plain data
    for item in overrides:
        key, value = parse_override(item)
        _set_dotted(tree, key, value)
    try:
        return RunConfig.model_validate(tree)
    except ValidationError as err:
        where = source + (f" (with --set {' '.join(overrides)})" if overrides else "")
        raise ConfigError(_format_validation_error(err, where)) from None


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Read a YAML config (None: all defaults), apply `--set` overrides and validate."""
    data: Any = {}
    source = "<defaults>"
    if path is not None:
        p = Path(path)
        source = str(p)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise ConfigError(f"{p}: not valid YAML{where}: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(
                f"{p}: the top level must be a mapping of sections, got {type(data).__name__}"
            )
    return config_from_dict(data, overrides, source=source)


def dump_config(cfg: RunConfig) -> str:
    """YAML text of a config (never holds secrets: keys live in the environment)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
