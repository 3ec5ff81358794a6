"""The object store's commit protocol under concurrency and crashes, with real processes against
the SeaweedFS server: racing writers lose nothing and duplicate nothing, a writer killed
mid-commit leaves the previous version readable, and the next run completes."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from candleflow.store.bar_store import BarStore
from candleflow.store.object_store import ObjectBarStore
from candleflow.store.objects import ObjectClient, PreconditionFailed, parse_object_root
from tests.core import store_writer as writer
from tests.core.store_writer import make_bars
from tests.core.test_store import Helper

pytestmark = pytest.mark.slow


@pytest.fixture
def helpers() -> Iterator[list[Helper]]:
    started: list[Helper] = []
    yield started
    for helper in started:
        helper.close()


def _spawn(helpers: list[Helper], root: str, *args: str) -> Helper:
    helper = Helper(root, *args)  # type: ignore[arg-type]
    helpers.append(helper)
    return helper


def test_the_server_honours_conditional_puts_and_only_one_racer_wins(s3_root: str) -> None:
    client = ObjectClient(parse_object_root(s3_root))
    key = f"{client.root.key}/race.json"
    etag = client.put(key, b"v0", if_absent=True)
    with pytest.raises(PreconditionFailed):
        client.put(key, b"again", if_absent=True)
    with pytest.raises(PreconditionFailed):
        client.put(key, b"stale", if_match='"0123456789abcdef0123456789abcdef"')
    winners: list[int] = []
    barrier = threading.Barrier(12)

    def race(i: int) -> None:
        barrier.wait()
        try:
            client.put(key, f"writer {i}".encode(), if_match=etag)
            winners.append(i)
        except PreconditionFailed:
            pass

    threads = [threading.Thread(target=race, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1
    assert client.get(key) is not None
    assert client.get(key)[0] == f"writer {winners[0]}".encode()  # type: ignore[index]


def test_two_processes_writing_one_series_lose_and_duplicate_nothing(
    s3_root: str, helpers: list[Helper]
) -> None:
    even = _spawn(helpers, s3_root, "chunks", "--parity", "0", "--chunks", "15")
    odd = _spawn(helpers, s3_root, "chunks", "--parity", "1", "--chunks", "15")
    even.expect("ready")
    odd.expect("ready")
    even.send("go")
    odd.send("go")
    assert even.finish(timeout=300) == 0, even.stderr()
    assert odd.finish(timeout=300) == 0, odd.stderr()
    store = BarStore(s3_root)
    expected = make_bars(writer.hourly_index(), 7)  # what one serial writer stores
    got = store.read(writer.SOURCE, writer.SYMBOL, writer.HOURLY_TF)
    pd.testing.assert_frame_equal(got, expected, check_freq=False)
    assert not got.index.has_duplicates
    meta = store.read_meta(writer.SOURCE, writer.SYMBOL, writer.HOURLY_TF)
    assert meta["rows"] == len(expected)
    assert len(store.partitions(writer.SOURCE, writer.SYMBOL, writer.HOURLY_TF)) == 1


def test_a_writer_killed_mid_commit_leaves_the_previous_version_and_the_next_run_completes(
    s3_root: str, helpers: list[Helper]
) -> None:
    store = BarStore(s3_root, gc_grace=0)
    assert isinstance(store, ObjectBarStore)
    baseline = make_bars(writer.crash_index(), 0)
    store.write(writer.SOURCE, writer.SYMBOL, writer.CRASH_TF, baseline)
    (partition,) = store.partitions(writer.SOURCE, writer.SYMBOL, writer.CRASH_TF)
    meta_before = store.read_meta(writer.SOURCE, writer.SYMBOL, writer.CRASH_TF)

    helper = _spawn(helpers, s3_root, "once", "--version", "1", "--hang", "commit")
    helper.expect("writing")
    helper.expect("committing")  # its new partition file is uploaded
    helper.kill()

    uploaded = [
        i.key
        for i in store.client.list(f"{store.root.key}/")
        if i.key.endswith(".parquet") and i.key != getattr(partition, "key", None)
    ]
    assert len(uploaded) == 1  # the dead writer's orphan, named by no manifest
    assert store.partitions(writer.SOURCE, writer.SYMBOL, writer.CRASH_TF) == [partition]
    pd.testing.assert_frame_equal(
        store.read(writer.SOURCE, writer.SYMBOL, writer.CRASH_TF), baseline, check_freq=False
    )
    assert store.read_meta(writer.SOURCE, writer.SYMBOL, writer.CRASH_TF) == meta_before

    # The next run completes, and its commit sweeps the orphan (grace 0 here).
    rerun = _spawn(helpers, s3_root, "once", "--version", "2")
    rerun.expect("done")
    assert rerun.finish(timeout=300) == 0
    newer = make_bars(writer.crash_index(), 2)
    pd.testing.assert_frame_equal(
        store.read(writer.SOURCE, writer.SYMBOL, writer.CRASH_TF), newer, check_freq=False
    )
    store.write(writer.SOURCE, writer.SYMBOL, writer.CRASH_TF, newer)  # sweeps with grace 0
    left = [i.key for i in store.client.list(f"{store.root.key}/") if i.key.endswith(".parquet")]
    current = store.partitions(writer.SOURCE, writer.SYMBOL, writer.CRASH_TF)
    assert left == [getattr(p, "key", None) for p in current]


def test_four_worker_processes_backfilling_different_series_complete_every_one(
    s3_root: str, tmp_path: Path
) -> None:
    import subprocess
    import sys

    from tests.store.load_worker import load

    symbols = ["AAPL", "MSFT", "SPY", "EURUSD=X"]
    timeframes = ["1d", "1h", "15m"]
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.store.load_worker", s3_root, symbol, *timeframes],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for symbol in symbols
    ]
    for worker in workers:
        stdout, stderr = worker.communicate()
        assert worker.returncode == 0 and stdout.strip() == "done", stderr
    shared = BarStore(s3_root)
    local = BarStore(tmp_path / "serial")
    for symbol in symbols:
        for tf in timeframes:
            load(str(local.root), symbol, tf)
    assert shared.series() == local.series()
    assert len(shared.series()) == len(symbols) * len(timeframes)
    for source, symbol, tf in local.series():
        pd.testing.assert_frame_equal(
            shared.read(source, symbol, tf), local.read(source, symbol, tf)
        )
        assert shared.read_meta(source, symbol, tf)["rows"] == len(local.read(source, symbol, tf))
