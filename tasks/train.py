"""Fine-tune a fresh student from the base checkpoint on a dataset version."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task

from fdd_core.config import StudentConfig, TrainingConfig
from fdd_core.schemas import DatasetRef, ModelRef
from fdd_core.store import read_examples
from fdd_core.training import train_student
from fdd_core.training.launch import train_in_child
from tasks.common import CACHE_POLICY, note_disk_full


@task(
    name="train-student",
    task_run_name="train-r{round_index}",
    cache_policy=CACHE_POLICY,
    persist_result=True,
)
def train_student_task(
    dataset: DatasetRef,
    student: StudentConfig,
    training: TrainingConfig,
    cache_dir: str | None,
    run_dir: str,
    round_index: int,
    code_version: str,
) -> ModelRef | None:
    """Always from the base checkpoint (not the previous round's student)."""
    if dataset.n_rows == 0:
        return None  # nothing to learn from: the base model stays the student
    out = Path(run_dir) / f"round-{round_index}" / "student"
    try:
        if training.isolation == "process":
            # A child process: the timeout and Ctrl-C stop it for real, an out-of-memory
            # error stays in it, and its memory is returned when it ends.
            return train_in_child(
                dataset,
                student.model,
                training,
                out,
                dataset_version=dataset.version_id,
                device=student.device,
                cache_dir=cache_dir,
                logger=get_run_logger(),
            )
        return train_student(
            read_examples(dataset),
            student.model,
            training,
            out,
            dataset_version=dataset.version_id,
            device=student.device,
            cache_dir=cache_dir,
        )
    except Exception as exc:  # OSError, or a library's own error (SafetensorError)
        note_disk_full(exc, out, _folder_bytes(Path(student.model)))
        raise


def _folder_bytes(folder: Path) -> int | None:
    """Size of a local base checkpoint: what a full fine-tune's student takes on disk."""
    if not folder.is_dir():
        return None
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
