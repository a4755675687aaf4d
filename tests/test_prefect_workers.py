"""tests/prefect_workers.py: a drain that cannot hang on a server that has gone.

A real Prefect events worker, aimed at a server that accepts connections and never answers
(a stopped server behind a proxy, or one hung), holds an event that it cannot deliver.
Prefect's own `drain_all()` (what `prefect_test_harness` calls on exit) would wait for it
without a bound; after `drain(timeout)` it is no longer registered, so it cannot.
"""

from __future__ import annotations

import socket
import threading

import pytest

from tests import prefect_workers


@pytest.fixture
def silent_url():
    """A listening socket that never accepts: connections open, nothing ever answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        yield f"http://127.0.0.1:{s.getsockname()[1]}/api"


def test_drain_gives_up_on_a_stopped_server_and_later_drains_do_not_wait(silent_url):
    from prefect.events import emit_event
    from prefect.events.worker import EventsWorker
    from prefect.settings import PREFECT_API_URL, temporary_settings

    before = prefect_workers.dropped
    with temporary_settings(updates={PREFECT_API_URL: silent_url}):
        event = emit_event("fdd.test.undeliverable", resource={"prefect.resource.id": "fdd.t"})
        assert event is not None, "Prefect did not queue the event (events disabled?)"
        left = prefect_workers.drain(timeout=2.0)
    assert left >= 1
    assert prefect_workers.dropped == before + left

    # What prefect_test_harness does on exit: the stopped instance is no longer registered.
    assert not EventsWorker._instances
    finished = threading.Event()
    threading.Thread(target=lambda: (EventsWorker.drain_all(), finished.set()), daemon=True).start()
    assert finished.wait(60), "drain_all() still waits for the undeliverable event"
