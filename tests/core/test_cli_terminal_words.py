"""The CLI's terminal plumbing, without Prefect: --quiet keeps the managed server's announcement
off stderr, Prefect's lines stay off the terminal unless --verbose, ranges are in exchange time."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from candleflow.cli import common, managed
from candleflow.cli.app import exchange_range


def _announcing(announce: Callable[[str], None]) -> str:
    announce("started the candleflow Prefect server: UI http://127.0.0.1:4200")
    return "http://127.0.0.1:4200/api"


@pytest.mark.parametrize("quiet", [True, False])
def test_the_server_announcement_is_shown_unless_quiet(
    quiet: bool, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(managed, "ensure_api", _announcing)
    assert common.connect_api(quiet=quiet) == "http://127.0.0.1:4200/api"
    err = capsys.readouterr().err
    assert (err == "") if quiet else ("started the candleflow Prefect server" in err)


def _record(
    name: str, pathname: str = "/work/x.py", level: int = logging.WARNING
) -> logging.LogRecord:
    return logging.LogRecord(name, level, pathname, 1, "message", None, None)


@pytest.mark.parametrize(
    ("name", "pathname", "shown"),
    [
        ("prefect.flow_runs", "/x.py", False),
        ("prefect.task_runs", "/x.py", False),
        ("prefect", "/x.py", False),
        ("EventsWorker", "/venv/site-packages/prefect/_internal/concurrency/services.py", False),
        ("APILogWorker", "/x.py", False),
        ("candleflow.sources.files", "/work/candleflow/sources/files.py", True),
        ("tasks.load", "/work/tasks/load.py", True),
        ("prefecture", "/work/x.py", True),
    ],
)
def test_prefect_s_lines_stay_off_the_terminal(name: str, pathname: str, shown: bool) -> None:
    assert common.terminal_log_filter(_record(name, pathname)) is shown


@pytest.mark.parametrize(
    ("start", "end", "exchange", "expected"),
    [
        ("2024-01-02T05:00:00+00:00", "2024-03-29T04:00:00+00:00", "XNYS",
         "2024-01-02 09:30 → 2024-03-28 16:00 America/New_York"),
        # an early close (the day before Independence Day) ends the range at 13:00
        ("2024-07-01T04:00:00+00:00", "2024-07-04T04:00:00+00:00", "XNYS",
         "2024-07-01 09:30 → 2024-07-03 13:00 America/New_York"),
        ("2024-01-02T00:00:00+00:00", "2024-01-04T00:00:00+00:00", "XLON",
         "2024-01-02 08:00 → 2024-01-03 16:30 Europe/London"),
        # a window inside one session keeps its own edges
        ("2024-01-02T15:00:00+00:00", "2024-01-02T17:00:00+00:00", "XNYS",
         "2024-01-02 10:00 → 2024-01-02 12:00 America/New_York"),
    ],
)  # fmt: skip
def test_a_load_range_reads_in_exchange_time(
    start: str, end: str, exchange: str, expected: str
) -> None:
    assert exchange_range(start, end, exchange) == expected


def test_watch_shows_the_percent_once() -> None:
    from candleflow.cli.app import _LEADING_PERCENT

    assert (
        _LEADING_PERCENT.sub("", "42.82% · ETA 2:16 · Backfilling: 4/12")
        == "ETA 2:16 · Backfilling: 4/12"
    )
    assert _LEADING_PERCENT.sub("", "Done in 0:34 · 7,035 bars") == "Done in 0:34 · 7,035 bars"
