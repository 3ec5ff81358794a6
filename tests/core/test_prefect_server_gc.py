"""The managed server's process collects cyclic garbage on a thread of its own
(``candleflow.cli.prefect_server``): a finaliser that waits for a busy SQLite connection must not
hold up the thread that runs the server's event loop (here: the test's main thread)."""

from __future__ import annotations

import gc
import sqlite3
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

from candleflow.cli.prefect_server import BackgroundCollector
from tests.timing import Running


@pytest.fixture
def collector() -> Iterator[BackgroundCollector]:
    assert gc.isenabled()
    running = BackgroundCollector(interval=0.01).start()
    try:
        yield running
    finally:
        running.stop()
    assert gc.isenabled()  # restored


class _Marker:
    pass


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


def _freed_on(obj: object) -> tuple[threading.Event, list[str]]:
    freed, where = threading.Event(), []

    def record() -> None:
        where.append(threading.current_thread().name)
        freed.set()

    weakref.finalize(obj, record)
    return freed, where


def test_cyclic_garbage_is_freed_by_the_collector_thread_not_by_allocations(
    collector: BackgroundCollector,
) -> None:
    assert not gc.isenabled()  # allocations never start a collection on this thread
    node = _Node()
    freed, where = _freed_on(node)
    del node
    assert freed.wait(60), "the collector never freed the cycle"
    assert where == ["candleflow-gc"]


def test_a_cursor_finaliser_waiting_for_a_busy_connection_does_not_block_the_loop_thread(
    tmp_path: Path, collector: BackgroundCollector
) -> None:
    """The server's deadlock, in miniature: connection ``busy`` waits (in SQLite's busy handler,
    holding its mutex) for the write lock ``holder`` has; a cycle holding one of ``busy``'s
    cursors becomes garbage. If this thread collected it, the cursor's finaliser would wait for
    ``busy``'s mutex, and ``holder`` — whose commit is this thread's next step — would never
    commit: ``busy`` gives up after its timeout, "database is locked". That timeout is generous
    (120 s) so that a busy machine never makes the fixed path fail."""
    db = tmp_path / "t.db"
    holder = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    holder.execute("PRAGMA journal_mode=WAL")
    holder.execute("CREATE TABLE t (x INTEGER)")
    busy = sqlite3.connect(db, timeout=120, isolation_level=None, check_same_thread=False)
    cursor = busy.execute("SELECT 1 UNION ALL SELECT 2")  # a statement left half-read
    cursor.fetchone()
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("INSERT INTO t VALUES (1)")

    stepping = threading.Event()

    def progress() -> int:
        stepping.set()  # busy's INSERT has started: next it waits for holder's lock
        return 0

    busy.set_progress_handler(progress, 1)
    insert = Running(lambda: busy.execute("INSERT INTO t VALUES (2)"))
    assert stepping.wait(60), "the INSERT never started"

    marker = _Marker()  # freed with the cursor, by the same collection
    freed, where = _freed_on(marker)
    cycle: list[object] = [cursor, marker]
    cycle.append(cycle)
    del cursor, marker, cycle
    # The allocations that would start a collection on this thread were automatic collection on.
    garbage = [[i] for i in range(100_000)]
    del garbage
    holder.execute("COMMIT")  # this thread is free: the lock goes, the INSERT gets it
    insert.result(60, "busy's INSERT")
    assert busy.execute("SELECT count(*) FROM t").fetchone() == (2,)
    assert freed.wait(60), "the collector never freed the cycle"
    assert where == ["candleflow-gc"]
    holder.close()
    busy.close()
