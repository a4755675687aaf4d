"""Scheduled runs that make progress (fdd_core/schedules.py): run-name templates and
continuation (`fdd run --add-rounds N`, the flow parameter `add_rounds`).

The run folders here are real `run.json` records as the flow writes them
(`write_run_record`); the end-to-end check through a cron-scheduled deployment on a
PostgreSQL-backed Prefect server is in tests/test_prefect_server.py.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from fdd_core.config import ConfigError, RunConfig, load_config
from fdd_core.reports import RoundResult, write_run_record
from fdd_core.schedules import (
    RunNameError,
    check_run_name,
    continuation_hash,
    latest_run,
    plan_continuation,
    render_run_name,
)
from fdd_core.schemas import DatasetRef

WHEN = datetime(2026, 12, 2, 4, 15, 7, tzinfo=timezone.utc)


def _cfg(root: Path, **storage) -> RunConfig:
    cfg = RunConfig()
    cfg.storage.root = str(root)
    for key, value in storage.items():
        setattr(cfg.storage, key, value)
    return cfg


def _round(i: int) -> RoundResult:
    ref = DatasetRef(version_id=f"v{i}", path=f"/x/v{i}", n_rows=10 * (i + 1))
    return RoundResult(round=i, dataset=ref)


def _finished(cfg: RunConfig, name: str, rounds: int, status: str = "completed") -> Path:
    folder = Path(cfg.storage.root) / name
    folder.mkdir(parents=True)
    write_run_record(folder, cfg, status=status, rounds=[_round(i) for i in range(rounds + 1)])
    return folder


# --------------------------------------------------------------------------- run names


def test_templates_render_from_the_scheduled_time_in_utc():
    assert render_run_name("nightly-{date}", when=WHEN, hash_="abcdef0123456789") == (
        "nightly-2026-12-02"
    )
    paris = WHEN.astimezone(timezone(timedelta(hours=1)))  # the same instant, another zone
    assert render_run_name("r-{datetime}-{hash}", when=paris, hash_="abcdef0123456789") == (
        "r-2026-12-02T041507-abcdef0123"
    )
    assert render_run_name("t{time}", when=WHEN, hash_="x") == "t041507"


@pytest.mark.parametrize(
    "template, needle",
    [
        ("nightly-{day}", "{day}"),
        ("a/{date}", "single folder name"),
        ("x-{date", "not a valid template"),
        ("..", "single folder name"),
    ],
)
def test_a_bad_template_is_refused_with_what_is_allowed(template, needle):
    with pytest.raises(RunNameError) as info:
        check_run_name(template)
    assert needle in str(info.value)
    if "{day}" in needle:
        assert "{date}, {time}, {datetime}, {hash}" in str(info.value)


def test_a_bad_template_in_a_config_file_names_the_field(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("storage:\n  run_name: nightly-{day}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    text = str(info.value)
    assert "storage.run_name" in text and "{day}" in text and str(path) in text


def test_the_flow_names_a_templated_run_from_its_time(tmp_path):
    from flows.distill import run_dir_for, run_name_for

    cfg = _cfg(tmp_path, run_name="nightly-{date}")
    assert run_name_for(cfg, WHEN) == "nightly-2026-12-02"
    assert run_dir_for(cfg, WHEN) == tmp_path.resolve() / "nightly-2026-12-02"
    plain = _cfg(tmp_path, run_name="fixed")
    assert run_name_for(plain, WHEN) == "fixed"
    assert run_name_for(_cfg(tmp_path), WHEN) == f"fdd-{_cfg(tmp_path).config_hash()[:10]}"


# --------------------------------------------------------------------------- continuation


def test_continuation_ignores_rounds_and_run_name_only():
    a = RunConfig()
    b = RunConfig()
    b.rounds.n_rounds = 7
    b.storage.run_name = "nightly-{date}"
    assert continuation_hash(a) == continuation_hash(b)
    c = RunConfig()
    c.teacher.n_samples = a.teacher.n_samples + 1
    assert continuation_hash(c) != continuation_hash(a)


def test_the_latest_run_of_the_same_config_is_extended_from_its_last_round(tmp_path):
    cfg = _cfg(tmp_path, run_name="nightly-{date}")
    cfg.rounds.n_rounds = 1
    old = _finished(cfg, "nightly-2026-12-01", rounds=1)
    time.sleep(0.01)  # updated_at has microseconds; keep the order unambiguous
    newer = _cfg(tmp_path, run_name="nightly-{date}")
    newer.rounds.n_rounds = 2
    latest = _finished(newer, "nightly-2026-12-02", rounds=2)
    other = _cfg(tmp_path, run_name="other")
    other.teacher.n_samples += 1  # another config: never extended
    time.sleep(0.01)
    _finished(other, "other", rounds=3)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "run.json").write_text("{ not json")
    (tmp_path / "empty").mkdir()  # no run.json at all

    assert latest_run(cfg) == latest
    plan = plan_continuation(cfg, 2)
    assert plan is not None
    assert (plan.run_dir, plan.last_round, plan.config.rounds.n_rounds) == (latest, 2, 4)
    assert cfg.rounds.n_rounds == 1  # the caller's config is not changed
    assert "from round 2 to round 4" in plan.describe()
    # An explicit folder is extended whatever is newer.
    forced = plan_continuation(cfg, 1, old)
    assert (forced.run_dir, forced.last_round, forced.config.rounds.n_rounds) == (old, 1, 2)


def test_a_run_that_finished_no_round_or_no_run_at_all_gives_no_continuation(tmp_path):
    cfg = _cfg(tmp_path / "runs")
    assert plan_continuation(cfg, 1) is None  # the root does not even exist
    folder = Path(cfg.storage.root) / "started"
    folder.mkdir(parents=True)
    write_run_record(folder, cfg, status="failed", rounds=[])
    assert latest_run(cfg) is None and plan_continuation(cfg, 1) is None
    with pytest.raises(ValueError, match="at least 1"):
        plan_continuation(cfg, 0)


def test_a_run_of_an_incompatible_older_config_is_skipped(tmp_path):
    cfg = _cfg(tmp_path)
    good = _finished(cfg, "good", rounds=0)
    bad = tmp_path / "bad"
    bad.mkdir()
    record = json.loads((good / "run.json").read_text())
    record["config"]["teacher"]["n_samples"] = "many"
    record["updated_at"] = "9999"  # newest, but not a valid config
    (bad / "run.json").write_text(json.dumps(record))
    assert latest_run(cfg) == good


def test_fdd_run_refuses_a_bad_run_name_and_a_negative_add_rounds(tmp_path, capsys):
    from fdd.cli import main

    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"storage:\n  root: {tmp_path / 'runs'}\n")
    with pytest.raises(SystemExit) as info:
        main(["run", str(cfg), "--run-name", "x/{date}", "--skip-preflight"])
    assert "--run-name" in str(info.value.code) and "single folder name" in str(info.value.code)
    with pytest.raises(SystemExit) as info:
        main(["run", str(cfg), "--add-rounds", "-1", "--skip-preflight"])
    assert "--add-rounds must be 1 or more" in str(info.value.code)
    assert not (tmp_path / "runs").exists()  # refused before anything was written
