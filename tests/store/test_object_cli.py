"""The CLI on an s3:// store root: `show`, `backtest` and `query` read it as they read a folder,
and a root that is malformed (exit 2) or unreachable (exit 1) fails on one line."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from candleflow.store.bar_store import BarStore
from tests.conftest import run_cli as run


def _daily(sessions: int) -> pd.DataFrame:
    days = pd.bdate_range("2024-01-02", periods=sessions, tz="UTC", name="timestamp")
    close = 100 + np.sin(np.arange(sessions) / 3) * 5
    return pd.DataFrame(
        {"open": close, "high": close + 1, "low": close - 1, "close": close, "volume": 10.0},
        index=days,
    )


def test_show_backtest_and_query_read_an_s3_root(
    s3_root: str, capsys: pytest.CaptureFixture[str]
) -> None:
    BarStore(s3_root).write("files", "SPX", "1d", _daily(60))
    code, out, err = run(capsys, "show", "SPX", "--timeframe", "1d", "--store", s3_root)
    assert (code, err) == (0, "") and out.startswith("files/SPX/1d") and "rows        60" in out
    code, out, _ = run(
        capsys, "show", "SPX", "--timeframe", "1d", "--store", s3_root, "--start", "2024-01-02",
        "--end", "2024-01-05", "--csv",
    )  # fmt: skip
    assert code == 0 and len(out.splitlines()) == 1 + 4
    code, out, _ = run(
        capsys, "backtest", "SPX", "--timeframe", "1d", "--store", s3_root,
        "--params", "fast=3,slow=8", "--json",
    )  # fmt: skip
    assert code == 0 and json.loads(out)["symbol"] == "SPX"
    sql = "select symbol, source, count(*) as n from bars group by symbol, source"
    code, out, _ = run(capsys, "query", sql, "--store", s3_root, "--json")
    assert code == 0 and json.loads(out) == [{"symbol": "SPX", "source": "files", "n": 60}]


def test_a_bucket_that_does_not_exist_is_one_line_exit_1(
    s3_root: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "features", "SPX", "--store", "s3://no-such-bucket-cf/x")
    assert (code, out) == (1, "")
    assert err.startswith("error: ") and err.count("\n") == 1 and "no-such-bucket-cf" in err


def test_a_malformed_root_is_bad_input(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "features", "SPX", "--store", "s3://")
    assert code == 2 and err.startswith("error: ")
