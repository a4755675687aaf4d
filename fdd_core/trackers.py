"""Optional experiment trackers for the training loss (`training.report_to`).

accelerate's own tracker classes (TensorBoard, MLflow, Weights & Biases), used directly so
the Accelerator the trainer builds stays as it is. The tracker's package is imported only
when chosen; a missing one is an error that names it. Logs go beside the student folder
(``<student>-logs/``), never inside it: the student folder is replaced atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

PACKAGES = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}


def start_tracker(report_to: str, out_dir: Path, config: dict[str, Any]) -> Any | None:
    """A started tracker for `report_to`, or None for "none"."""
    if report_to == "none":
        return None
    if report_to not in PACKAGES:
        raise ValueError(f"training.report_to must be one of none, {', '.join(PACKAGES)}")
    from accelerate import tracking

    logdir = out_dir.parent / f"{out_dir.name}-logs"
    logdir.mkdir(parents=True, exist_ok=True)
    name = out_dir.parent.name + "-" + out_dir.name
    if report_to == "tensorboard":
        tracker = tracking.TensorBoardTracker(name, logdir)
    elif report_to == "mlflow":
        tracker = tracking.MLflowTracker(
            experiment_name="fdd", logging_dir=str(logdir), run_name=name
        )
    else:
        tracker = tracking.WandBTracker(name, dir=str(logdir))
    try:
        tracker.start()
    except ImportError as exc:
        pkg = PACKAGES[report_to]
        raise RuntimeError(
            f"training.report_to is {report_to!r} but {pkg} is not installed "
            f"(pip install {pkg}), or set training.report_to: none"
        ) from exc
    tracker.store_init_configuration(config)
    return tracker


__all__ = ["start_tracker"]
