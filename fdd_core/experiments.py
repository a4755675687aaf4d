"""Experiments: a sweep of variants of one run config, and the record that tracks them.

A sweep is a base config (YAML + `--set`), `--vary KEY=V1,V2` dimensions (their cross
product) and optional seeds. Each variant is one FDD run with its own run folder inside the
experiment folder:

    <experiment>/experiment.json      definition, each variant's overrides, folder, status
    <experiment>/<variant>/           the variant's run folder (run.json, rounds, datasets)
    <experiment>/shared/round0-<key>/ round 0 computed once for every variant sharing it

**Seeds.** A seed s sets `teacher.seed` and `training.seed` to s together: the teacher's
samples and the student's data order / initialisation both change, which is the spread a
user sees when rerunning a method. Without `--seeds`, variants keep the config's seeds.

**Shared round 0.** Round 0 (teacher rationales, D0, the first student, its benchmark) does
not read `synthesis.*` or `rounds.*`, so variants that differ only there have identical
round-0 inputs. Every variant's round 0 runs with `round0_config(cfg)` (those sections reset
to defaults, the run name cleared) in the folder `shared/round0-<round0_key(cfg)>`, so
every task input is the same and the second variant's round 0 is all cache hits.

Nothing here imports Prefect: flows/sweep.py runs the variants, this module plans them.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field

from fdd_core.config import (
    ConfigError,
    RoundsConfig,
    RunConfig,
    SynthesisConfig,
    config_from_dict,
    parse_override,
)
from fdd_core.io import atomic_write_json

EXPERIMENT_FILE = "experiment.json"
SHARED_DIR = "shared"
SEED_KEYS = ("teacher.seed", "training.seed")


# --------------------------------------------------------------------------- round 0


def round0_config(cfg: RunConfig) -> RunConfig:
    """The config round 0 actually depends on: synthesis and rounds reset, no run name."""
    tree = cfg.model_dump(mode="json")
    tree["synthesis"] = SynthesisConfig().model_dump(mode="json")
    tree["rounds"] = RoundsConfig(n_rounds=0).model_dump(mode="json")
    tree["storage"]["run_name"] = None
    return RunConfig.model_validate(tree)


def round0_key(cfg: RunConfig) -> str:
    return round0_config(cfg).config_hash()[:12]


def shared_round0_dir(cfg: RunConfig) -> Path | None:
    """Where this config's round 0 is computed when `storage.shared_round0` is set."""
    if not cfg.storage.shared_round0:
        return None
    return Path(cfg.storage.shared_round0).expanduser().resolve() / f"round0-{round0_key(cfg)}"


# --------------------------------------------------------------------------- definition


def split_values(raw: str) -> list[str]:
    """`a,b,[1,2],{x: 1}` -> ['a', 'b', '[1,2]', '{x: 1}']: commas inside brackets stay."""
    out, depth, cur, quote = [], 0, [], ""
    for ch in raw:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append("".join(cur).strip())
            cur = []
            continue
        cur.append(ch)
    out.append("".join(cur).strip())
    return out


def parse_vary(items: list[str]) -> dict[str, list[str]]:
    """`--vary KEY=V1,V2` items -> {KEY: [V1, V2]} (raw strings, parsed as YAML later)."""
    vary: dict[str, list[str]] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(
                f"--vary expects KEY=V1,V2,... (e.g. synthesis.strategy=fdd,none), got {item!r}"
            )
        key, raw = item.split("=", 1)
        key = key.strip()
        parse_override(f"{key}=x")  # the same key rules as --set
        values = split_values(raw)
        if not raw.strip() or any(v == "" for v in values):
            raise ConfigError(f"--vary {key}: empty value in {raw!r}")
        if key in vary:
            raise ConfigError(f"--vary {key} given twice")
        if key in SEED_KEYS:
            raise ConfigError(f"--vary {key}: use --seeds, which sets {' and '.join(SEED_KEYS)}")
        if len(set(values)) != len(values):
            raise ConfigError(f"--vary {key}: repeated value in {raw!r}")
        vary[key] = values
    return vary


def parse_seeds(raw: str | None) -> list[int] | None:
    if raw is None or raw == "":
        return None
    try:
        seeds = [int(x) for x in raw.split(",")]
    except ValueError:
        raise ConfigError(f"--seeds expects comma-separated integers, got {raw!r}") from None
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds: repeated seed in {raw!r}")
    return seeds


class SweepSpec(BaseModel):
    """What `fdd sweep` was asked to run (stored in experiment.json)."""

    config: str | None = None
    base: dict[str, Any] = Field(default_factory=dict, description="the config file's tree")
    overrides: list[str] = Field(default_factory=list, description="--set items")
    vary: dict[str, list[str]] = Field(default_factory=dict)
    seeds: list[int] | None = None
    max_parallel: int = Field(2, ge=1)
    deployment: str | None = None

    def digest(self) -> str:
        blob = json.dumps(
            [self.base, self.overrides, self.vary, self.seeds], sort_keys=True, default=str
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:10]


class Variant(BaseModel):
    name: str
    overrides: dict[str, str] = Field(default_factory=dict, description="KEY -> raw value")
    seed: int | None = None

    def set_items(self) -> list[str]:
        items = [f"{k}={v}" for k, v in self.overrides.items()]
        if self.seed is not None:
            items += [f"{k}={self.seed}" for k in SEED_KEYS]
        return items


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[:40] or "x"


def _short_keys(keys: list[str]) -> dict[str, str]:
    """The last part of each dotted key, unless two keys share it."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: (s if last.count(s) == 1 else k) for k, s in zip(keys, last)}


def expand(spec: SweepSpec) -> list[Variant]:
    """The cross product of the --vary values, times the seeds, as named variants."""
    keys = list(spec.vary)
    short = _short_keys(keys)
    combos = list(itertools.product(*(spec.vary[k] for k in keys))) if keys else [()]
    seeds: list[int | None] = list(spec.seeds) if spec.seeds else [None]
    variants = []
    for combo in combos:
        for seed in seeds:
            parts = [f"{_slug(short[k])}-{_slug(v)}" for k, v in zip(keys, combo)]
            if seed is not None:
                parts.append(f"seed-{seed}")
            variants.append(
                Variant(name="_".join(parts) or "base", overrides=dict(zip(keys, combo)), seed=seed)
            )
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise ConfigError(f"variant names collide: {names}; use values that differ as text")
    return variants


def variant_config(spec: SweepSpec, variant: Variant, experiment_dir: str | Path) -> RunConfig:
    """The variant's full config; its run folder and shared round 0 live in the experiment."""
    where = Path(experiment_dir).resolve()
    items = [
        *spec.overrides,
        *variant.set_items(),
        f"storage.root={where}",
        f"storage.run_name={variant.name}",
        f"storage.shared_round0={where / SHARED_DIR}",
    ]
    return config_from_dict(
        spec.base, items, source=f"{spec.config or '<defaults>'} [{variant.name}]"
    )


def load_base(path: str | None) -> dict[str, Any]:
    """The config file's tree (validation happens per variant, with its overrides)."""
    if path is None:
        return {}
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level must be a mapping of sections")
    return data


# --------------------------------------------------------------------------- record


class VariantRecord(BaseModel):
    name: str
    overrides: dict[str, str] = Field(default_factory=dict)
    seed: int | None = None
    run_dir: str | None = None
    round0_key: str | None = None
    config_hash: str | None = None
    status: str = "pending"  # pending | running | completed | failed
    error: str | None = None
    attempts: int = 0
    flow_run_name: str | None = None
    started_at: str | None = None
    finished_at: str | None = None


class SharedRecord(BaseModel):
    """One shared round 0 and the variants that use it."""

    key: str
    run_dir: str
    variants: list[str] = Field(default_factory=list)
    status: str = "pending"
    error: str | None = None


class Experiment(BaseModel):
    name: str
    dir: str
    spec: SweepSpec
    status: str = "pending"
    created_at: str | None = None
    updated_at: str | None = None
    variants: list[VariantRecord] = Field(default_factory=list)
    shared_round0: list[SharedRecord] = Field(default_factory=list)

    def variant(self, name: str) -> VariantRecord:
        return next(v for v in self.variants if v.name == name)

    def save(self) -> Path:
        from fdd_core.reports import now_iso

        self.updated_at = now_iso()
        self.created_at = self.created_at or self.updated_at
        return atomic_write_json(Path(self.dir) / EXPERIMENT_FILE, self.model_dump(mode="json"))


def read_experiment(path: str | Path) -> Experiment:
    """An experiment from its folder or its experiment.json; a clear error otherwise."""
    p = Path(path)
    if p.is_dir():
        p = p / EXPERIMENT_FILE
    if not p.is_file():
        raise FileNotFoundError(f"no {EXPERIMENT_FILE} at {p}")
    try:
        return Experiment.model_validate_json(p.read_text())
    except ValueError as exc:
        raise ValueError(f"{p}: not a valid experiment record: {exc}") from None


def run_is_complete(run_dir: str | None) -> bool:
    """Whether a run folder's run.json says completed."""
    if not run_dir:
        return False
    path = Path(run_dir) / "run.json"
    try:
        return json.loads(path.read_text()).get("status") == "completed"
    except (OSError, ValueError):
        return False


def prepare_experiment(spec: SweepSpec, experiment_dir: str | Path, name: str) -> Experiment:
    """Merge the sweep into the experiment folder's record (new or existing).

    Variants already completed (record and run.json agree, same config) keep their record
    and are not run again; every other variant is (re)set to pending. A variant whose
    config does not validate is marked failed with the error and never stops the others.
    """
    folder = Path(experiment_dir).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    try:
        exp = read_experiment(folder)
        exp.spec = spec
    except FileNotFoundError:
        exp = Experiment(name=name, dir=str(folder), spec=spec)
    old = {v.name: v for v in exp.variants}
    records: list[VariantRecord] = []
    groups: dict[str, SharedRecord] = {}
    for variant in expand(spec):
        rec = old.get(variant.name) or VariantRecord(name=variant.name)
        rec.overrides, rec.seed = variant.overrides, variant.seed
        try:
            cfg = variant_config(spec, variant, folder)
        except ConfigError as exc:
            rec.status, rec.error, rec.run_dir = "failed", str(exc), None
            records.append(rec)
            continue
        rec.run_dir = str(folder / variant.name)
        rec.round0_key = round0_key(cfg)
        shared = shared_round0_dir(cfg)
        group = groups.setdefault(
            rec.round0_key, SharedRecord(key=rec.round0_key, run_dir=str(shared))
        )
        group.variants.append(variant.name)
        same_config = rec.config_hash == cfg.config_hash()
        if not (rec.status == "completed" and same_config and run_is_complete(rec.run_dir)):
            rec.status, rec.error = "pending", None
        rec.config_hash = cfg.config_hash()
        records.append(rec)
    old_groups = {g.key: g for g in exp.shared_round0}
    for key, group in groups.items():
        if key in old_groups and run_is_complete(old_groups[key].run_dir):
            group.status = "completed"
    exp.variants = records
    exp.shared_round0 = list(groups.values())
    exp.status = "pending"
    exp.save()
    return exp


def to_run(exp: Experiment) -> list[VariantRecord]:
    return [v for v in exp.variants if v.status != "completed" and v.run_dir is not None]


def finish_status(exp: Experiment) -> str:
    statuses = {v.status for v in exp.variants}
    if statuses == {"completed"}:
        return "completed"
    if "completed" in statuses:
        return "partial"
    return "failed"


__all__ = [
    "EXPERIMENT_FILE",
    "SEED_KEYS",
    "Experiment",
    "SharedRecord",
    "SweepSpec",
    "Variant",
    "VariantRecord",
    "expand",
    "finish_status",
    "load_base",
    "parse_seeds",
    "parse_vary",
    "prepare_experiment",
    "read_experiment",
    "round0_config",
    "round0_key",
    "run_is_complete",
    "shared_round0_dir",
    "split_values",
    "to_run",
    "variant_config",
]
