"""Bounded delivery of what Prefect's log and event workers still hold.

Prefect sends run logs and events from background workers, one instance per API URL. When
the server an instance was made for has stopped (a module's test harness, a stack), every
queued item is retried against a closed port with the client's backoff: about a minute per
item. `prefect_test_harness` drains *every* registered instance without a time limit when it
exits, so an instance left registered after its server stopped (the PostgreSQL-backed stack
was stopped without a drain) stalled a later module's teardown past pytest's 900 s timeout
in CI, and the process's exit for over an hour.

`drain(timeout)` delivers what it can within `timeout`. Prefect's `drain_all` unregisters
every instance it stops, so a later drain never sees the ones still busy; those keep trying
in the background until the interpreter leaves, where each would again wait without a bound
(tests/conftest.py leaves with `os._exit` when any were left). Call it while the server the
items are meant for still runs: before a stack is stopped, before a harness exits.
"""

from __future__ import annotations

import contextlib
import sys

# Items dropped so far in this process: the ones still retrying in the background.
dropped = 0


def _workers():
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    return (APILogWorker, EventsWorker)


def drain(timeout: float = 30.0) -> int:
    """Deliver within `timeout` s; return how many items were left undelivered."""
    if "prefect" not in sys.modules:
        return 0
    left = 0
    for cls in _workers():
        with cls._instance_cache_lock:  # private, read only: to say what was left
            instances = list(cls._instances.values())
        cls.drain_all(timeout=timeout)  # stops and unregisters every instance, then waits
        for instance in instances:
            done = getattr(instance, "_done_event", None)
            if done is not None and not done.is_set():
                left += max(1, instance._queue.qsize())
    if left:
        global dropped
        dropped += left
        sys.stderr.write(
            f"tests: {left} Prefect log/event item(s) could not be delivered within "
            f"{timeout:g} s (their server has stopped); left behind\n"
        )
    return left


@contextlib.contextmanager
def isolated_harness(startup_timeout: float = 60.0):
    """`prefect_test_harness` whose exit cannot stall on another server's stale items."""
    from prefect.testing.utilities import prefect_test_harness

    drain()  # whatever earlier modules left for servers that have gone
    with prefect_test_harness(server_startup_timeout=startup_timeout):
        try:
            yield
        finally:
            drain()  # while this harness's server still runs
