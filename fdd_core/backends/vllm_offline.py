"""`VLLMBackend`: in-process vLLM (`vllm.LLM`) for GPU workers, with LoRA adapters.

vLLM is optional and heavy, so it is imported inside `__init__`; without it the error says
which extra to install and points to docs/vllm.md (vLLM 0.31-0.33 pin FastAPI below what
Prefect 3.8 needs, so it usually lives in an environment of its own, or runs as an
OpenAI-compatible server that the `openai` backend talks to).

Mapping (our -> vLLM):
- `SamplingParams(n, temperature, top_p, max_tokens, stop, seed)` -> `vllm.SamplingParams`
  with the same fields; `max_tokens` is always set (vLLM's default is 16), and the seed of
  each prompt is `derive_seed(seed, prompt, 0)`, so a prompt's samples do not depend on the
  batch or shard it lands in (vLLM seeds each request on its own generator).
- text prompts go through `LLM.generate`, chat prompts through `LLM.chat` (the model's own
  chat template, generation prompt added); a mixed batch makes one call of each and the
  results are put back in prompt order.
- a LoRA `adapter` folder (peft format) becomes `enable_lora=True` on the engine and a
  `LoRARequest` on every call, so a student adapter is graded without merging it.
- `RequestOutput.outputs` -> `Completion(text, finish_reason, len(prompt_token_ids),
  len(token_ids))`, ordered by the output's `index`.
"""

from __future__ import annotations

import gc
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

from fdd_core import deadline
from fdd_core.backends.base import (
    BackendBase,
    Completion,
    FinishReason,
    Prompt,
    SamplingParams,
    check_prompts,
    derive_seed,
)

log = logging.getLogger(__name__)

VLLM_MISSING = (
    "the 'vllm' backend needs vLLM, which is not installed in this Python environment. "
    "Install it with: pip install 'fdd[vllm]'. vLLM pins FastAPI below what Prefect 3.8 "
    "needs, so it usually gets an environment of its own; see docs/vllm.md, which also shows "
    "how to run it as an OpenAI-compatible server and point backend 'openai' at it."
)
# max_lora_rank values vLLM accepts; an adapter's rank is rounded up to the next one.
_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)
_FINISH_MAP: dict[str, FinishReason] = {"stop": "stop", "length": "length"}


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError as exc:
        raise ImportError(VLLM_MISSING) from exc
    return vllm


def _adapter_rank(adapter: Path) -> int:
    """The LoRA rank `r` from a peft adapter folder's adapter_config.json."""
    config_path = adapter / "adapter_config.json"
    if not config_path.is_file():
        raise ValueError(
            f"adapter {adapter} is not a LoRA adapter folder: expected {config_path.name} "
            "inside (a peft `save_pretrained` output)"
        )
    try:
        rank = json.loads(config_path.read_text(encoding="utf-8")).get("r")
    except (OSError, ValueError) as exc:
        raise ValueError(f"{config_path}: cannot read it as JSON ({exc})") from exc
    if not isinstance(rank, int) or rank < 1:
        raise ValueError(f"{config_path}: field 'r' must be a positive integer, got {rank!r}")
    return rank


def _max_lora_rank(rank: int) -> int:
    for allowed in _LORA_RANKS:
        if rank <= allowed:
            return allowed
    raise ValueError(f"LoRA rank {rank} is above the largest vLLM supports ({_LORA_RANKS[-1]})")


class VLLMBackend(BackendBase):
    """Generate with an in-process `vllm.LLM`. See the module docstring."""

    name = "vllm"

    def __init__(
        self,
        model: str,
        adapter: str | None = None,
        dtype: str = "auto",
        gpu_memory_utilization: float = 0.85,
        tensor_parallel_size: int = 1,
        *,
        seed: int = 0,
        max_model_len: int | None = None,
        engine_kwargs: dict[str, Any] | None = None,
    ) -> None:
        vllm = _import_vllm()
        self.model = model
        self.adapter = str(Path(adapter).expanduser().resolve()) if adapter else None
        self.model_id = model if self.adapter is None else f"{model}+lora:{self.adapter}"
        llm_kwargs: dict[str, Any] = {
            "model": model,
            "dtype": dtype,
            "gpu_memory_utilization": gpu_memory_utilization,
            "tensor_parallel_size": tensor_parallel_size,
            "seed": seed,
            "enable_lora": self.adapter is not None,
        }
        self._lora = None
        if self.adapter is not None:
            rank = _adapter_rank(Path(self.adapter))
            llm_kwargs["max_lora_rank"] = _max_lora_rank(rank)
            from vllm.lora.request import LoRARequest

            # One adapter per engine: name and integer id only need to be unique within it.
            self._lora = LoRARequest(Path(self.adapter).name or "adapter", 1, self.adapter)
        if max_model_len is not None:
            llm_kwargs["max_model_len"] = max_model_len
        llm_kwargs.update(engine_kwargs or {})
        self._vllm = vllm
        self._llm = vllm.LLM(**llm_kwargs)
        self._settings = {k: v for k, v in llm_kwargs.items() if k != "model"}

    def __repr__(self) -> str:
        return f"VLLMBackend(model={self.model!r}, adapter={self.adapter!r})"

    def describe(self) -> dict[str, Any]:
        """Settings worth saving next to results."""
        return {
            "backend": self.name,
            "model": self.model,
            "adapter": self.adapter,
            **{k: v for k, v in self._settings.items() if isinstance(v, (str, int, float))},
        }

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[list[Completion]]:
        """One list of `params.n` completions per prompt, in prompt order."""
        if self._llm is None:
            raise RuntimeError("VLLMBackend.generate called after close()")
        prompts = list(prompts)
        check_prompts(prompts)
        results: list[list[Completion] | None] = [None] * len(prompts)
        text_idx = [i for i, p in enumerate(prompts) if isinstance(p, str)]
        chat_idx = [i for i, p in enumerate(prompts) if not isinstance(p, str)]
        for method, idx in (("generate", text_idx), ("chat", chat_idx)):
            if not idx:
                continue
            batch = [prompts[i] for i in idx]
            # The shard's time limit is checked between vLLM calls, not inside one (vLLM's
            # engine decodes the whole batch before it returns).
            deadline.check(f"before vLLM's {method} of {len(batch)} prompts", retryable=False)
            outputs = getattr(self._llm, method)(
                batch,
                [self._sampling(params, p) for p in batch],
                use_tqdm=False,
                lora_request=self._lora,
            )
            if len(outputs) != len(batch):
                raise RuntimeError(
                    f"vllm LLM.{method} returned {len(outputs)} outputs for {len(batch)} prompts"
                )
            for i, output in zip(idx, outputs):
                results[i] = _completions(output, params.n, i)
        return cast("list[list[Completion]]", results)  # every index is a text or a chat one

    def _sampling(self, params: SamplingParams, prompt: Prompt) -> Any:
        return self._vllm.SamplingParams(
            n=params.n,
            temperature=params.temperature,
            top_p=params.top_p,
            max_tokens=params.max_tokens,
            stop=list(params.stop),
            seed=derive_seed(params.seed, prompt, 0),
        )

    @property
    def closed(self) -> bool:
        return self._llm is None

    def close(self) -> None:
        """Drop the engine and give its GPU memory back (best effort)."""
        if self._llm is None:
            return
        self._llm = None
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except Exception:  # freeing memory must never turn a finished job into a failure
            log.debug("could not empty the CUDA cache", exc_info=True)

    def __enter__(self) -> VLLMBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _completions(output: Any, n: int, index: int) -> list[Completion]:
    """A vLLM RequestOutput as `n` Completions, ordered by the outputs' own index."""
    samples = sorted(output.outputs, key=lambda c: getattr(c, "index", 0))
    if len(samples) != n:
        raise RuntimeError(f"vllm returned {len(samples)} samples for prompt {index}, expected {n}")
    prompt_tokens = len(getattr(output, "prompt_token_ids", None) or ())
    return [
        Completion(
            text=sample.text,
            finish_reason=_FINISH_MAP.get(str(sample.finish_reason), "error"),
            prompt_tokens=prompt_tokens,
            completion_tokens=len(sample.token_ids or ()),
        )
        for sample in samples
    ]
