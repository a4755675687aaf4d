"""Shared fixtures. Tests run on CPU; slow ones are marked, GPU ones skip with a reason."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FDD_SHARED_DIR", REPO.parent / "shared"))
SHARED_DATA = SHARED / "data"

# Isolate Prefect from the user's profile and from earlier test runs (cached results would
# leak between runs), and keep telemetry off: it fails offline and can lock SQLite.
_PREFECT_HOME = tempfile.mkdtemp(prefix="fdd-test-prefect-")
os.environ.setdefault("PREFECT_HOME", _PREFECT_HOME)
os.environ.setdefault("PREFECT_RESULTS_LOCAL_STORAGE_PATH", str(Path(_PREFECT_HOME) / "results"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
# `fdd run` subprocesses start an ephemeral API server; Prefect waits 20 s for it by
# default, which a loaded 2-core machine can miss (the test then fails for no fault of
# the code under test).
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def shared_file(*parts: str) -> Path:
    """A file under ../shared/data, or skip the test saying why."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.is_file():
        pytest.skip(f"needs {path} (../shared is present for developers and CI only)")
    return path


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


def pytest_collection_modifyitems(config, items):
    if _has_cuda():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU; none is visible on this machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def embedded_model_dir() -> Path:
    """The embedded SmolLM2-135M-Instruct as a safetensors folder (converted once)."""
    from fdd_core.models import ModelNotFoundError, resolve_model

    try:
        return Path(resolve_model("smollm2-135m-instruct"))
    except ModelNotFoundError as exc:  # the test command installs it; a bare env may not
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def tiny_causal_dir(tmp_path_factory, embedded_model_dir) -> Path:
    """A tiny randomly initialised Llama-style model with the embedded tokenizer."""
    from fdd_core.models import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-causal"), arch="causal")


@pytest.fixture(scope="session")
def tiny_seq2seq_dir(tmp_path_factory, embedded_model_dir) -> Path:
    """A tiny randomly initialised T5-style encoder-decoder with the embedded tokenizer."""
    from fdd_core.models import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-seq2seq"), arch="seq2seq")


# --------------------------------------------------------------------------- leaving

# Prefect's log and event workers deliver what is still queued when the interpreter exits.
# After the suite, the servers those items were meant for (each module's test harness, the
# stacks) are stopped, so each item is retried against a closed port: in CI that kept the
# finished suite's process alive for over an hour, past the job's time limit. Deliver
# with a bound at the very end, then leave without waiting for what cannot arrive.
_DRAIN_TIMEOUT_S = 20.0


def pytest_sessionfinish(session, exitstatus):
    session.config._fdd_exitstatus = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    import sys

    if "prefect" not in sys.modules or not hasattr(config, "_fdd_exitstatus"):
        return
    try:
        from tests import prefect_workers

        prefect_workers.drain(timeout=_DRAIN_TIMEOUT_S)
        pending = prefect_workers.dropped  # this drain's and any earlier one's
    except Exception as exc:  # noqa: BLE001 - leaving must not fail the suite
        sys.stderr.write(f"conftest: could not drain Prefect's workers ({exc!r})\n")
        pending = 1
    if pending:
        sys.stderr.write(
            f"conftest: {pending} Prefect log/event item(s) are still queued for servers the tests "
            f"have stopped; exiting with status {config._fdd_exitstatus} without waiting\n"
        )
        # os._exit skips atexit, where Prefect stops this process's temporary API server:
        # stop it here, or it outlives the suite.
        try:
            from prefect.server.api.server import SubprocessASGIServer

            for server in list(SubprocessASGIServer._instances.values()):
                server.stop()
        except Exception as exc:  # noqa: BLE001 - leaving must not fail the suite
            sys.stderr.write(f"conftest: could not stop Prefect's temporary server ({exc!r})\n")
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(config._fdd_exitstatus)
