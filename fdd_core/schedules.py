"""What a scheduled run does: a fresh run per tick, or one more step of the same run.

A schedule that starts an unchanged config again reaches the same run folder and finds
every task cached: it does nothing. Two ways make a tick useful (docs/cluster.md):

- **A run-name template** (`storage.run_name: "nightly-{date}"`): each tick gets a folder
  of its own, named from the flow run's scheduled start time, while the teacher's request
  cache (`storage.cache_dir`) is still shared, so what the teacher already answered is not
  paid again. Placeholders: `{date}` (YYYY-MM-DD), `{time}` (HHMMSS), `{datetime}`
  (YYYY-MM-DDTHHMMSS), all in UTC, and `{hash}` (the config hash, 10 characters).
- **Continuation** (`fdd run --add-rounds N`, the flow parameter `add_rounds`): extend the
  latest run of the same config by N rounds after its last finished round. The rounds
  already done are cache hits; only the new ones do work.

This module has no Prefect in it: the flow and the CLI pass the time and the config.
"""

from __future__ import annotations

import json
import string
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the config package imports this module
    from fdd_core.config import RunConfig

PLACEHOLDERS = ("date", "time", "datetime", "hash")


class RunNameError(ValueError):
    pass


def check_run_name(template: str) -> str:
    """Raise RunNameError unless `template` is a usable folder name with known placeholders."""
    try:
        fields = [f for _, f, spec, conv in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        raise RunNameError(f"{template!r} is not a valid template ({exc})") from None
    unknown = [f for f in fields if f not in PLACEHOLDERS]
    if unknown:
        raise RunNameError(
            f"{template!r} uses {{{unknown[0]}}}; the placeholders are "
            + ", ".join("{" + p + "}" for p in PLACEHOLDERS)
        )
    name = render_run_name(template, when=datetime(2000, 1, 1, tzinfo=timezone.utc), hash_="0")
    if "/" in name or "\\" in name or name in ("", ".", ".."):
        raise RunNameError(f"{template!r} is not a single folder name")
    return template


def is_template(run_name: str | None) -> bool:
    return bool(run_name) and "{" in run_name


def render_run_name(template: str, *, when: datetime, hash_: str) -> str:
    """The folder name for a run scheduled at `when` (converted to UTC)."""
    t = when.astimezone(timezone.utc)
    return template.format(
        date=t.strftime("%Y-%m-%d"),
        time=t.strftime("%H%M%S"),
        datetime=t.strftime("%Y-%m-%dT%H%M%S"),
        hash=hash_[:10],
    )


# --------------------------------------------------------------------------- continuation


def continuation_hash(cfg: RunConfig) -> str:
    """The config hash without what a continuation changes (the number of rounds) or what
    tells its ticks apart (the run name)."""
    base = cfg.model_copy(deep=True)
    base.rounds.n_rounds = 0
    base.storage.run_name = None
    return base.config_hash()


@dataclass(frozen=True)
class Continuation:
    run_dir: Path
    last_round: int  # the last round that run finished
    config: RunConfig  # the config with rounds.n_rounds = last_round + add_rounds

    def describe(self) -> str:
        return (
            f"extending {self.run_dir} from round {self.last_round} "
            f"to round {self.config.rounds.n_rounds}"
        )


def _record(path: Path) -> dict | None:
    try:
        record = json.loads((path / "run.json").read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _last_round(record: dict) -> int | None:
    rounds = [r.get("round") for r in record.get("rounds") or [] if isinstance(r, dict)]
    rounds = [r for r in rounds if isinstance(r, int)]
    return max(rounds) if rounds else None


def latest_run(cfg: RunConfig) -> Path | None:
    """The run folder under `storage.root` of the latest run of this config (any number of
    rounds, any run name) that finished at least round 0; None when there is none."""
    from fdd_core.config import RunConfig as _RunConfig

    root = Path(cfg.storage.root).expanduser()
    if not root.is_dir():
        return None
    want = continuation_hash(cfg)
    found: list[tuple[str, str, Path]] = []
    for folder in root.iterdir():
        record = _record(folder) if folder.is_dir() else None
        if record is None or _last_round(record) is None:
            continue
        try:
            theirs = _RunConfig.model_validate(record.get("config") or {})
        except ValueError:  # a run of an older, incompatible config: not this config's run
            continue
        if continuation_hash(theirs) == want:
            found.append((str(record.get("updated_at") or ""), folder.name, folder))
    return max(found)[2] if found else None


def plan_continuation(
    cfg: RunConfig, add_rounds: int, run_dir: str | Path | None = None
) -> Continuation | None:
    """Where and how far `add_rounds` more rounds go: in `run_dir` when given, else in the
    latest run of this config. None when there is no finished round to extend."""
    if add_rounds < 1:
        raise ValueError(f"add_rounds must be at least 1 (got {add_rounds})")
    folder = Path(run_dir) if run_dir is not None else latest_run(cfg)
    if folder is None:
        return None
    record = _record(folder)
    last = _last_round(record) if record is not None else None
    if last is None:
        return None
    extended = cfg.model_copy(deep=True)
    extended.rounds.n_rounds = last + add_rounds
    return Continuation(run_dir=folder.resolve(), last_round=last, config=extended)
