"""Host memory of CPU training: give freed activation memory back to the system.

glibc serves a large allocation with its own `mmap` and returns it on `free`, but only above
a threshold that it raises to the size of the largest block freed so far (up to 32 MiB).
After the first training step, torch's activation tensors (a few MiB each on a 135M model)
fall under it and come from the heap instead, where freed blocks stay mapped and the heap
fragments around the few tensors that live on (with gradient checkpointing, each layer's
input). Measured on the embedded SmolLM2-135M, LoRA, one batch of 8 x 238 tokens
(docs/BENCHMARKS.md, "Where training memory goes"): with gradient checkpointing the tensors
autograd keeps add up to 207 MB but the process grew by 2.6 GB in the forward pass; with a
fixed threshold it grew by 0.74 GB and peaked at 1.35 GB instead of 3.49 GB.

`return_freed_memory()` fixes the threshold (which also switches glibc's adjustment off),
so every block of `threshold` bytes or more is mapped for itself and unmapped when freed.
It changes the allocator of the whole process, which is why `train_student` calls it only
for CPU training (the flow trains in a child process of its own). A user who sets
`MALLOC_MMAP_THRESHOLD_` in the environment keeps their own setting; on a C library other
than glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys

log = logging.getLogger("fdd_core.training")

MMAP_THRESHOLD = 128 * 1024  # glibc's own starting value, kept fixed
_M_MMAP_THRESHOLD = -3  # mallopt parameter number (malloc.h)
_applied: int | None = None


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return None
        libc = ctypes.CDLL(None)
    except (ValueError, OSError, AttributeError):
        return None
    return libc if hasattr(libc, "mallopt") else None


def return_freed_memory(threshold: int = MMAP_THRESHOLD) -> bool:
    """Serve allocations of `threshold` bytes or more with mmap from now on (glibc).

    Returns whether the policy is in force: True once applied (idempotent), False where
    the C library is not glibc, mallopt refused, or `MALLOC_MMAP_THRESHOLD_` is set in the
    environment (the user's choice wins).
    """
    global _applied
    if threshold <= 0:
        raise ValueError(f"threshold must be a positive number of bytes, got {threshold}")
    if _applied == threshold:
        return True
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        log.debug("MALLOC_MMAP_THRESHOLD_ is set: leaving the allocator as configured")
        return False
    libc = _glibc()
    if libc is None:
        return False
    if libc.mallopt(ctypes.c_int(_M_MMAP_THRESHOLD), ctypes.c_int(threshold)) != 1:
        log.warning("mallopt(M_MMAP_THRESHOLD, %d) failed; freed memory may stay mapped", threshold)
        return False
    _applied = threshold
    log.debug("allocations of %d bytes or more are now mapped and unmapped one by one", threshold)
    return True
