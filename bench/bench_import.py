"""Import of a vendor CSV: ``load --source files`` against a bare ``pandas.read_csv`` +
``pyarrow.parquet.write_table`` of the same file, in the same run.

The file is generated: ``ROWS`` one-minute bars (2,000,000 by default, ~20 years of XNYS
sessions; set ``CANDLEFLOW_BENCH_IMPORT_ROWS`` or pass a count — ``python -m bench.bench_import
200000`` — for a quick run) with naive exchange-time stamps, as vendors write them. Candleflow's
side is the load pipeline the ``load-data`` flow runs (:func:`run_load`: validate, head and tail,
store read, gap analysis, one segment, price rules, merge, partitioned atomic writes, metadata)
with the file read once; the load-data flow itself adds its fixed per-run cost (see ``bench
flow``), measured here once too unless ``CANDLEFLOW_BENCH_IMPORT_FLOW=0``. The bare pipeline
parses nothing but numbers and writes one file. The goal: candleflow's throughput at least half
the bare pipeline's. Each side runs ``REPEATS`` times; medians are printed.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

ROWS = 2_000_000
REPEATS = 3
GOAL = 0.5
_END = pd.Timestamp("2025-01-01", tz="UTC")


def write_minute_csv(path: Path, rows: int) -> None:
    """``rows`` one-minute XNYS bars ending 2024, stamped in exchange time (no offset)."""
    from candleflow.loading.calendars import expected_bars

    days = int(rows / 390 * 366 / 252) + 30
    starts = expected_bars("XNYS", "1m", _END - pd.Timedelta(days=days), _END).starts[-rows:]
    rng = np.random.default_rng(7)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.0005, len(starts))))
    open_ = np.r_[close[0], close[:-1]]
    local = starts.tz_convert("America/New_York").tz_localize(None).as_unit("s")
    table = pa.table({
        "datetime": pa.array(local.to_numpy(), pa.timestamp("s")),
        "open": open_.round(4), "high": (np.maximum(open_, close) + 0.01).round(4),
        "low": (np.minimum(open_, close) - 0.01).round(4), "close": close.round(4),
        "volume": rng.integers(100, 10_000, len(starts)),
    })  # fmt: skip
    with path.open("wb") as handle:  # a vendor's header is not quoted
        handle.write((",".join(table.column_names) + "\n").encode())
        options = pacsv.WriteOptions(include_header=False, quoting_style="none")
        pacsv.write_csv(table, handle, options)


def bare(path: Path, out: Path) -> float:
    started = time.perf_counter()
    frame = pd.read_csv(path)
    pq.write_table(pa.Table.from_pandas(frame), out)
    return time.perf_counter() - started


def candleflow(path: Path, root: Path) -> tuple[float, int]:
    from candleflow.loading.pipeline import LoadRequest, run_load
    from candleflow.sources.files import FileSource
    from candleflow.store.bar_store import BarStore

    started = time.perf_counter()
    summary = run_load(LoadRequest.parse("BENCH", "1m"), FileSource(path), BarStore(root))
    elapsed = time.perf_counter() - started
    if summary.segments != 1 or summary.failed_segments:
        raise SystemExit(f"import did not run in one pass: {summary.to_dict()}")
    return elapsed, summary.rows_after


def through_flow(path: Path, root: Path) -> float:
    """One import through the load-data flow (an ephemeral Prefect API, started beforehand)."""
    home = tempfile.mkdtemp(prefix="candleflow-bench-prefect-")
    os.environ.update(
        PREFECT_HOME=home, PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_LOGGING_LEVEL="ERROR", PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120",
    )  # fmt: skip
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    from flows.load_data import load_data

    small = root / "warm.csv"
    write_minute_csv(small, 1000)
    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        load_data("WARM", "1m", source="files", path=str(small), store=str(root / "warm"))
        started = time.perf_counter()
        load_data("BENCH", "1m", source="files", path=str(path), store=str(root / "flow"))
        return time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    rows = int(args[0]) if args else int(os.environ.get("CANDLEFLOW_BENCH_IMPORT_ROWS", ROWS))
    with tempfile.TemporaryDirectory(prefix="candleflow-bench-import-") as tmp:
        root = Path(tmp)
        path = root / "bars_1m.csv"
        write_minute_csv(path, rows)
        size = path.stat().st_size
        bare_s = statistics.median(bare(path, root / f"bare{i}.parquet") for i in range(REPEATS))
        runs = [candleflow(path, root / f"store{i}") for i in range(REPEATS)]
        ours_s, stored = statistics.median(r[0] for r in runs), runs[0][1]
        flow_s = None
        if os.environ.get("CANDLEFLOW_BENCH_IMPORT_FLOW", "1") != "0":
            flow_s = through_flow(path, root)
    ratio = bare_s / ours_s
    print(f"work: {rows:,} one-minute bars, CSV {size / 1e6:,.0f} MB → Parquet ({REPEATS} runs)")
    print(f"bare read_csv + write_table: {bare_s:7.2f} s  {rows / bare_s:12,.0f} rows/s")
    print(f"candleflow load (files):     {ours_s:7.2f} s  {rows / ours_s:12,.0f} rows/s "
          f"({stored:,} bars stored)")  # fmt: skip
    if flow_s is not None:
        print(f"  through the load-data flow: {flow_s:6.2f} s  {rows / flow_s:12,.0f} rows/s")
    verdict = "meets" if ratio >= GOAL else "misses"
    print(f"throughput ratio candleflow/bare: {ratio:5.2f} ({verdict} the goal of {GOAL:.2f})")


if __name__ == "__main__":
    main()
