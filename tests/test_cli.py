"""The `fdd` command line: help, clear config errors, pre-flight checks, run inspection."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from fdd.cli import main
from fdd_core.config import RunConfig
from fdd_core.reports import RoundResult, write_run_record
from fdd_core.schemas import Example, Problem, Rationale
from fdd_core.store import write_version


def test_help_lists_the_commands():
    out = subprocess.run([sys.executable, "-m", "fdd", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for command in ("run", "runs", "data", "config", "eval", "deploy", "setup", "sweep", "compare"):
        assert command in out.stdout


def test_bad_config_file_fails_with_field_value_and_exit_2(tmp_path, capsys):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("teacher:\n  n_samples: -3\n")
    assert main(["run", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "teacher.n_samples" in err and "-3" in err and "greater than or equal to 1" in err


def test_unknown_backend_fails_before_any_work(tmp_path, capsys):
    assert (
        main(
            [
                "run",
                "configs/quickstart.yaml",
                "--set",
                "teacher.backend=tgi",
                "--set",
                f"storage.root={tmp_path}",
            ]
        )
        == 2
    )
    assert "teacher.backend" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # no run folder was started


def test_missing_dataset_file_fails_in_preflight(tmp_path, capsys):
    args = [
        "run",
        "configs/quickstart.yaml",
        "--set",
        f"storage.root={tmp_path}",
        "--set",
        "data.train=[{name: gsm8k, path: /nonexistent/train.jsonl}]",
    ]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "data.train[0].path" in err and "/nonexistent/train.jsonl" in err
    assert not any(tmp_path.iterdir())


def test_unreachable_endpoint_fails_in_preflight(tmp_path, capsys):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = [
        "run",
        "configs/quickstart.yaml",
        "--set",
        f"storage.root={tmp_path}",
        "--set",
        "teacher.backend=openai",
        "--set",
        "teacher.model=m",
        "--set",
        f"teacher.base_url=http://127.0.0.1:{port}/v1",
    ]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "unreachable" in err and f"127.0.0.1:{port}" in err
    assert not any(tmp_path.iterdir())


@pytest.fixture
def finished_run(tmp_path):
    """A run folder as the flow leaves it: run.json and two dataset versions."""
    run_dir = tmp_path / "runs" / "demo"
    store = run_dir / "datasets"
    problem = Problem.create("Ann has 3 apples and buys 4 more. How many now?", 7.0)
    rat = Rationale(
        problem_id=problem.id, program="ans = 3 + 4", answer=7.0, teacher="t", prompt_version="v"
    )
    d0 = write_version(
        store, [Example.join(problem, rat)], parent=None, round=0, config_hash="c", code_version="x"
    )
    child = Problem.create(
        "Ann has 3 apples, buys 4 and 5 more. How many now?",
        None,
        origin="complex",
        parent_id=problem.id,
        round=1,
    )
    rat2 = Rationale(
        problem_id=child.id, program="ans = 3 + 4 + 5", answer=12.0, teacher="t", prompt_version="v"
    )
    labelled = child.model_copy(update={"answer": 12.0})
    d1 = write_version(
        store,
        [Example.join(problem, rat), Example.join(labelled, rat2)],
        parent=d0,
        round=1,
        config_hash="c",
        code_version="x",
    )
    rounds = [
        RoundResult(
            round=0,
            dataset=d0,
            added=1,
            counts_by_origin={"original": 1},
            metrics={"embedded": {"accuracy": 0.25}},
        ),
        RoundResult(
            round=1,
            dataset=d1,
            added=1,
            counts_by_origin={"original": 1, "complex": 1},
            metrics={"embedded": {"accuracy": 0.5}},
        ),
    ]
    write_run_record(run_dir, RunConfig(), status="completed", rounds=rounds)
    return tmp_path / "runs", d0, d1


def test_runs_list_shows_status_rounds_and_accuracy(finished_run, capsys):
    root, _, d1 = finished_run
    assert main(["runs", "list", "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "demo" in out and "completed" in out and "2/3" in out
    assert d1.version_id[:12] in out and "embedded=0.500" in out


def test_data_show_prints_counts_lineage_and_examples(finished_run, capsys):
    root, d0, d1 = finished_run
    assert main(["data", "show", d1.version_id[:8], "--root", str(root), "-n", "2"]) == 0
    out = capsys.readouterr().out
    assert d1.version_id in out
    assert '"complex": 1' in out and '"original": 1' in out
    assert (
        f"{d1.version_id[:12]} (round 1, 2 rows) <- {d0.version_id[:12]} (round 0, 1 rows)" in out
    )
    assert "ans = 3 + 4 + 5" in out


def test_data_show_unknown_version_is_a_clear_error(finished_run, capsys):
    root, _, _ = finished_run
    assert main(["data", "show", "zzzz", "--root", str(root)]) == 2
    assert "no dataset version matching 'zzzz'" in capsys.readouterr().err
