"""The training child process: `python -m fdd_core.training.worker JOB_FILE`.

Started by `fdd_core.training.launch.train_in_child` (alone, or once per rank under
torchrun). Reads the job file, trains the student with `train_student`, and prints its
progress on stdout, which the parent forwards to the task's log. Exit code 0: the student
folder is complete; anything else: the parent reports the failure with these lines.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path


def run(job_path: str | Path) -> int:
    from fdd_core.config import TrainingConfig
    from fdd_core.schemas import DatasetRef
    from fdd_core.store import read_examples
    from fdd_core.training.loop import train_student

    job = json.loads(Path(job_path).read_text())
    rank = os.environ.get("RANK")
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stdout,
        format=(f"[rank {rank}] " if rank is not None else "") + "%(levelname)s %(message)s",
    )
    examples = read_examples(DatasetRef.model_validate(job["dataset"]))
    train_student(
        examples,
        job["base_model"],
        TrainingConfig.model_validate(job["training"]),
        job["out_dir"],
        dataset_version=job["dataset_version"],
        device=job["device"],
        cache_dir=job["cache_dir"],
        progress=False,  # one line per logged step, not a progress bar, through a pipe
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m fdd_core.training.worker JOB_FILE", file=sys.stderr)
        return 2
    return run(argv[0])


if __name__ == "__main__":
    sys.exit(main())
