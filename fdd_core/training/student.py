"""A trained student's folder: written atomically (weights, tokenizer, meta.json last),
read back as a `ModelRef`, served as a backend config, loaded for evaluation."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

from fdd_core.config import ModelConfig
from fdd_core.io import atomic_write_json
from fdd_core.models import MODEL_LOAD_LOCK, peft_quietly, resolve_model
from fdd_core.schemas import ModelRef
from fdd_core.training.modeling import _is_seq2seq

META_FILE = "meta.json"


def _save_atomically(model: Any, tokenizer: Any, meta: dict, out_dir: Path, gc: bool) -> None:
    """Write into a hidden temp folder beside `out_dir`, fsync, then rename into place."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        if gc:
            model.config.use_cache = True  # the saved model generates with a KV cache
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        atomic_write_json(tmp / META_FILE, meta)  # last: its presence means "complete"
        _fsync_tree(tmp)
        if out_dir.exists():
            old = out_dir.parent / f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(out_dir, old)
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())


def read_model_ref(path: str | Path) -> ModelRef:
    """The `ModelRef` of a trained student folder (from its meta.json, or a bare adapter)."""
    folder = Path(path)
    meta_path = folder / META_FILE
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        return ModelRef(
            path=str(folder),
            base_model=meta["base_model"],
            dataset_version=meta.get("dataset_version"),
            adapter=bool(meta.get("adapter")),
        )
    adapter_cfg = folder / "adapter_config.json"
    if adapter_cfg.is_file():
        base = json.loads(adapter_cfg.read_text(encoding="utf-8")).get("base_model_name_or_path")
        if not base:
            raise ValueError(f"{adapter_cfg}: no base_model_name_or_path; cannot tell the base")
        return ModelRef(path=str(folder), base_model=base, adapter=True)
    if (folder / "config.json").is_file():
        return ModelRef(path=str(folder), base_model=str(folder), adapter=False)
    raise FileNotFoundError(
        f"{folder} is not a trained student (expected {META_FILE}, adapter_config.json or "
        "config.json inside)"
    )


def student_model_config(ref: ModelRef, base: ModelConfig) -> ModelConfig:
    """The backend config that serves `ref`: base + adapter for LoRA, the folder for full."""
    if ref.adapter:
        return base.model_copy(update={"model": ref.base_model, "adapter": ref.path})
    return base.model_copy(update={"model": ref.path, "adapter": None})


def load_student(
    ref_or_path: ModelRef | str | Path, *, device: str = "cpu", cache_dir: str | None = None
) -> tuple[Any, Any]:
    """(model, tokenizer) of a trained student, in eval mode. LoRA: base + adapter, unmerged."""
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    ref = ref_or_path if isinstance(ref_or_path, ModelRef) else read_model_ref(ref_or_path)
    base_path = resolve_model(ref.base_model, cache_dir) if ref.adapter else ref.path
    cls = AutoModelForSeq2SeqLM if _is_seq2seq(base_path) else AutoModelForCausalLM
    with MODEL_LOAD_LOCK:
        model = cls.from_pretrained(base_path, dtype="float32")
        if ref.adapter:
            from peft import PeftModel

            with peft_quietly():
                model = PeftModel.from_pretrained(model, ref.path)
    tokenizer = AutoTokenizer.from_pretrained(ref.path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.to(device).eval(), tokenizer
