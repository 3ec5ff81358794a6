"""The managed Prefect server's process: ``prefect server start``, with Python's cyclic garbage
collector moved off the server's event loop (``python -m candleflow.cli.prefect_server server
start …`` takes Prefect's own arguments).

Why. On SQLite, Prefect's server runs each database connection in a thread of its own (aiosqlite)
and everything else — the API, the event consumers that record task runs — on one event loop.
When the cyclic collector runs on the event loop's thread (it runs wherever an allocation crosses
its threshold) and frees a cursor of a connection whose thread is inside a statement waiting for
a write lock, the cursor's finaliser (``sqlite3_reset``) waits for that connection's mutex. The
lock's holder is a transaction whose next step needs the event loop, now blocked: nothing moves
until the waiting statement gives up after SQLite's busy timeout — 60 s, which Prefect fixes.
Seen with ``py-spy dump --native`` on the server during parallel backfills: the event loop in
``gc_collect_main`` → ``cursor_dealloc`` → ``sqlite3_reset`` → ``pthread_mutex_lock``, every
request answered ~60 s late or timed out (the client's timeout is also 60 s).

Here the automatic collector is off and :class:`BackgroundCollector` collects from a thread of
its own, so a finaliser that must wait only holds up that thread. Finalisers already ran on
whichever thread triggered a collection (a connection's, a worker's); now it is always this one.
"""

from __future__ import annotations

import gc
import threading
from typing import Final

__all__ = ["BackgroundCollector", "main"]

#: Seconds between collections of the youngest generation.
INTERVAL: Final = 0.5
#: Every how many collections the middle generation, and every how many all three, are collected.
MIDDLE_EVERY: Final = 10
FULL_EVERY: Final = 100


class BackgroundCollector:
    """Turns Python's automatic cyclic garbage collection off and collects from a daemon thread:
    generation 0 every ``interval`` seconds, 1 every ``middle_every`` times, 2 every
    ``full_every`` times. :meth:`stop` ends the thread and restores automatic collection if it
    was on."""

    def __init__(
        self,
        interval: float = INTERVAL,
        middle_every: int = MIDDLE_EVERY,
        full_every: int = FULL_EVERY,
    ) -> None:
        if interval <= 0 or middle_every < 1 or full_every < 1:
            raise ValueError("interval must be > 0 and the counts >= 1")
        self.interval = interval
        self.middle_every = middle_every
        self.full_every = full_every
        self.collections = 0
        self._stop = threading.Event()
        self._was_enabled = False  # automatic collection was on at start()
        self._thread = threading.Thread(target=self._run, name="candleflow-gc", daemon=True)

    def start(self) -> BackgroundCollector:
        self._was_enabled = gc.isenabled()
        gc.disable()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        if self._was_enabled:
            gc.enable()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.collections += 1
            if self.collections % self.full_every == 0:
                gc.collect(2)
            elif self.collections % self.middle_every == 0:
                gc.collect(1)
            else:
                gc.collect(0)


def main() -> None:
    """Prefect's command line (``server start …``, from ``sys.argv``) in this process, with the
    collector moved."""
    BackgroundCollector().start()
    from prefect.cli import app

    app()


if __name__ == "__main__":
    main()
