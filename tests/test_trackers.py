"""`training.report_to`: the loss per step goes to an accelerate tracker only when chosen."""

from __future__ import annotations

import importlib.util
import json

import pytest

from fdd_core.config import TrainingConfig
from fdd_core.trackers import start_tracker
from fdd_core.training import train_student
from tests.test_training import make_examples


def test_none_starts_nothing(tmp_path):
    assert start_tracker("none", tmp_path / "student", {}) is None
    assert not (tmp_path / "student-logs").exists()


@pytest.mark.skipif(
    importlib.util.find_spec("tensorboard") is not None
    or importlib.util.find_spec("tensorboardX") is not None,
    reason="tensorboard is installed: the missing-package error cannot happen",
)
def test_a_missing_tracker_package_is_a_clear_error_before_any_step(tmp_path, tiny_causal_dir):
    cfg = TrainingConfig(method="full", max_steps=2, batch_size=4, report_to="tensorboard")
    with pytest.raises(RuntimeError, match=r"tensorboard is not installed.*report_to: none"):
        train_student(make_examples(4), str(tiny_causal_dir), cfg, tmp_path / "s", device="cpu")
    assert not (tmp_path / "s").exists()


@pytest.mark.slow
def test_loss_per_step_is_recorded_in_meta(tmp_path, tiny_causal_dir):
    cfg = TrainingConfig(method="full", max_steps=3, batch_size=4, warmup_ratio=0.0)
    train_student(make_examples(4), str(tiny_causal_dir), cfg, tmp_path / "s", device="cpu")
    meta = json.loads((tmp_path / "s" / "meta.json").read_text())
    assert len(meta["loss_per_step"]) == meta["steps"] == 3
    assert meta["loss_per_step"][-1] == pytest.approx(meta["final_loss"], abs=1e-6)


@pytest.mark.skipif(
    importlib.util.find_spec("tensorboard") is None, reason="needs tensorboard installed"
)
def test_tensorboard_receives_the_loss(tmp_path, tiny_causal_dir):
    cfg = TrainingConfig(method="full", max_steps=3, batch_size=4, report_to="tensorboard")
    train_student(make_examples(4), str(tiny_causal_dir), cfg, tmp_path / "s", device="cpu")
    assert list((tmp_path / "s-logs").rglob("events.out.tfevents.*"))
