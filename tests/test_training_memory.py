"""Host memory of CPU training: freed activation blocks go back to the system (glibc)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fdd_core.training import memory

REPO = Path(__file__).resolve().parents[1]
GLIBC = sys.platform.startswith("linux") and bool(os.confstr("CS_GNU_LIBC_VERSION"))

# Like a forward pass: a block as big as one activation is freed (which raises glibc's
# dynamic mmap threshold above it), then 50 such blocks are made and 45 freed, 5 kept
# spread among them (the checkpointed layer inputs). Prints how much RSS stays.
_CHILD = """
import sys, torch
from fdd_core.training.memory import return_freed_memory
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
applied = return_freed_memory() if sys.argv[1] == "on" else False
torch.empty(2**20).fill_(1.0); base = rss()
blocks = [torch.ones(2**20) for _ in range(50)]  # 4 MiB each
kept = blocks[::10]; del blocks
print(applied, rss() - base)
"""


def _retained(policy: str, **env: str) -> tuple[bool, float]:
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, policy],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), **env},
        timeout=120,
        check=True,
    )
    applied, mb = done.stdout.split()
    return applied == "True", float(mb)


@pytest.mark.skipif(not GLIBC, reason="the allocator policy is glibc's; this C library is not")
def test_freed_blocks_stay_mapped_by_default_and_go_back_with_the_policy():
    applied, default_mb = _retained("off")
    assert not applied
    assert default_mb > 120  # 45 freed 4 MiB blocks still mapped: the problem being fixed
    applied, policy_mb = _retained("on")
    assert applied
    assert policy_mb < 40  # the 5 kept blocks (20 MiB) and little else


@pytest.mark.skipif(not GLIBC, reason="the allocator policy is glibc's; this C library is not")
def test_a_users_malloc_setting_in_the_environment_wins():
    applied, _ = _retained("on", MALLOC_MMAP_THRESHOLD_="33554432")
    assert not applied


def test_threshold_must_be_positive():
    with pytest.raises(ValueError, match="positive number of bytes"):
        memory.return_freed_memory(0)
