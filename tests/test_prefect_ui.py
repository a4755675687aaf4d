"""The Prefect UI shows an FDD flow run: headless Chromium renders the run page.

Against the same server and runs as tests/test_prefect_server.py. The UI is a JavaScript
app, so `--virtual-time-budget` lets it fetch and render before Chromium dumps the DOM or
takes the screenshot. With FDD_UPDATE_DOCS_IMG=1 the screenshot is copied to
docs/img/prefect-flow-run.png.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.fixtures_prefect import (  # noqa: F401  (the fixtures register themselves)
    deployed_runs_fixture,
    prefect_stack_fixture,
    prefect_stack_guard_fixture,
)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.server,
    pytest.mark.skipif(
        CHROMIUM is None, reason="needs chromium (scripts/install_system_deps.sh installs it)"
    ),
]

DOCS_IMG = Path(__file__).resolve().parents[1] / "docs" / "img" / "prefect-flow-run.png"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _chromium(profile: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    cmd = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--disable-dev-shm-usage", "--hide-scrollbars",
        f"--user-data-dir={profile}", "--window-size=1400,1000",
        "--virtual-time-budget=15000", *args,
    ]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)


def _png_size(data: bytes) -> tuple[int, int]:
    # IHDR is the first chunk: width and height are big-endian at bytes 16..24.
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_flow_run_page_renders_the_run(deployed_runs, tmp_path):
    run = deployed_runs.flow_runs[0]
    url = f"{deployed_runs.stack.url}/runs/flow-run/{run.id}"

    dom = _chromium(tmp_path / "profile-dom", "--dump-dom", url)
    html = dom.stdout.decode("utf-8", "replace")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert run.name in html, f"the run name {run.name!r} is not in the rendered page"
    assert "Completed" in html  # the state badge

    shot = tmp_path / "flow-run.png"
    done = _chromium(tmp_path / "profile-shot", f"--screenshot={shot}", url)
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    data = shot.read_bytes()
    assert data.startswith(PNG_MAGIC)
    assert _png_size(data) == (1400, 1000)
    assert len(data) > 30_000, "suspiciously small screenshot: blank page?"

    if os.environ.get("FDD_UPDATE_DOCS_IMG") == "1":  # refresh the picture in the docs
        DOCS_IMG.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, DOCS_IMG)
