"""Inference backends. One per module; heavy SDKs are imported only when used."""

from fdd_core.backends.base import Backend, Completion, Prompt, SamplingParams

__all__ = ["Backend", "Completion", "Prompt", "SamplingParams"]
