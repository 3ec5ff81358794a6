"""Subprocess writer for the BarStore crash and concurrency tests (tests/core/test_store.py).

Run as ``python store_writer.py ROOT MODE [options]``. Every step is announced on stdout, one
line each, flushed, so the test can kill or release the process at a known point instead of
guessing with sleeps. Blocking is done on stdin, which the test holds open until it is done.
The bar generators here are also imported by the test, so both sides build identical frames.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from typing import Any

import numpy as np
import pandas as pd

from candleflow.errors import StoreBusy
from candleflow.store.bar_store import BarStore

SOURCE = "synthetic"
SYMBOL = "CRASH"
CRASH_TF = "1m"  # month partitions
HOURLY_TF = "1h"  # year partitions


def make_bars(index: pd.DatetimeIndex, version: int) -> pd.DataFrame:
    """Valid random OHLC bars on ``index``; volume is ``1000 + version``, so a read tells which."""
    rng = np.random.default_rng(version)
    n = len(index)
    open_ = 100.0 + rng.random(n)
    close = 100.0 + rng.random(n)
    high = np.maximum(open_, close) + rng.random(n)
    low = np.minimum(open_, close) - rng.random(n)
    volume = np.full(n, 1000.0 + version)
    index = pd.DatetimeIndex(index, name="timestamp").as_unit("ns")
    return pd.DataFrame(
        {"open": open_, "high": high, "low": low, "close": close, "volume": volume}, index=index
    )


def crash_index() -> pd.DatetimeIndex:
    """Every minute of March 2024: one full month partition (44,640 rows)."""
    return pd.date_range("2024-03-01", "2024-04-01", freq="1min", tz="UTC", inclusive="left")


def hourly_index() -> pd.DatetimeIndex:
    """1,440 hourly bars from 2024-01-01, all inside the 2024 year partition."""
    return pd.date_range("2024-01-01", periods=1440, freq="1h", tz="UTC")


def say(line: str) -> None:
    print(line, flush=True)


def block_forever() -> None:
    # The test kills us here; if it vanished instead, leave without finishing the write.
    sys.stdin.readline()
    os._exit(1)


def install_hang(where: str) -> None:
    """Make the next partition write stop at ``where`` and wait to be killed."""
    import pyarrow.parquet as pq

    if where == "half":
        real_write_table = pq.write_table

        def half_write_table(table: Any, where_to: Any, **kwargs: Any) -> None:
            buf = io.BytesIO()
            real_write_table(table, buf, **kwargs)
            data = buf.getvalue()
            where_to.write(data[: len(data) // 2])
            where_to.flush()
            say(f"half-written {len(data)}")
            block_forever()

        pq.write_table = half_write_table
    elif where == "replace":
        real_replace = os.replace

        def hanging_replace(src: Any, dst: Any) -> None:
            if str(dst).endswith(".parquet"):
                say(f"replacing {src}")
                block_forever()
            real_replace(src, dst)

        os.replace = hanging_replace  # type: ignore[assignment]
    elif where == "commit":
        # Object roots: the new partition files are uploaded, the manifest not yet replaced.
        from candleflow.store.manifest import ObjectSeries

        def hanging_commit(self: Any, *args: Any, **kwargs: Any) -> Any:
            say("committing")
            block_forever()

        ObjectSeries.commit = hanging_commit  # type: ignore[method-assign]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("root")
    parser.add_argument("mode", choices=["once", "loop", "chunks", "hold", "write"])
    parser.add_argument("--version", type=int, default=1)
    parser.add_argument("--hang", choices=["none", "half", "replace", "commit"], default="none")
    parser.add_argument("--parity", type=int, default=0)
    parser.add_argument("--chunks", type=int, default=12)
    parser.add_argument("--lock-timeout", type=float, default=60.0)
    args = parser.parse_args()
    store = BarStore(args.root, lock_timeout=args.lock_timeout)

    if args.mode == "once":
        bars = make_bars(crash_index(), args.version)
        install_hang(args.hang)
        say("writing")
        store.write(SOURCE, SYMBOL, CRASH_TF, bars)
        say("done")
    elif args.mode == "loop":
        index = crash_index()
        version = args.version  # continue after the version already stored
        while True:
            version += 1
            bars = make_bars(index, version)
            say(f"writing {version}")
            store.write(SOURCE, SYMBOL, CRASH_TF, bars)
            say(f"wrote {version}")
    elif args.mode == "chunks":
        bars = make_bars(hourly_index(), 7)
        mine = bars.iloc[args.parity :: 2]
        say("ready")
        sys.stdin.readline()  # the barrier: both writers start on the same "go"
        for chunk in np.array_split(np.arange(len(mine)), args.chunks):
            store.write(SOURCE, SYMBOL, HOURLY_TF, mine.iloc[chunk])
        say("done")
    elif args.mode == "hold":
        with store.lock(SOURCE, SYMBOL, HOURLY_TF):
            say("locked")
            block_forever()
    elif args.mode == "write":
        say("writing")
        try:
            store.write(SOURCE, SYMBOL, HOURLY_TF, make_bars(hourly_index(), args.version))
        except StoreBusy as exc:
            say(f"busy {exc.path}")
            return 3
        say("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
