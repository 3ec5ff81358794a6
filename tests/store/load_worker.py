"""A worker process for the shared-store tests: ``python -m tests.store.load_worker ROOT SYMBOL
TF...`` loads each timeframe of SYMBOL from the synthetic source into the store at ROOT with the
core pipeline (what a backfill worker on another host does), then prints ``done``."""

from __future__ import annotations

import sys

import pandas as pd

from candleflow.loading.pipeline import LoadRequest, run_load
from candleflow.sources.synthetic import SyntheticSource
from candleflow.store.bar_store import BarStore

START, END = "2023-06-01", "2024-02-15"
NOW = pd.Timestamp("2025-06-01", tz="UTC")


def load(root: str, symbol: str, timeframe: str) -> None:
    request = LoadRequest.parse(symbol, timeframe, start=START, end=END, mode="full")
    run_load(request, SyntheticSource(seed=11), BarStore(root), now=NOW)


def main(argv: list[str]) -> int:
    root, symbol, *timeframes = argv
    for timeframe in timeframes:
        load(root, symbol, timeframe)
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
