"""A clean terminal: `--quiet` prints the result and nothing else; `runs --json` is data; run ids
are shown as unique prefixes (whole with --wide) and accepted as such by `watch` and `cancel`;
a load's summary gives its range in the exchange's time."""

from __future__ import annotations

import json

import pytest

from tests.e2e.conftest import candleflow, one_line

pytestmark = pytest.mark.slow

WINDOW = ("--timeframe", "1d", "--start", "2024-01-02", "--end", "2024-03-28")


@pytest.fixture(scope="module")
def quiet_load(
    tmp_path_factory: pytest.TempPathFactory, cli_env: dict[str, str]
) -> tuple[str, str]:
    store = tmp_path_factory.mktemp("quiet") / "store"
    result = candleflow(cli_env, "load", "AAPL", *WINDOW, "--store", str(store), "--quiet")
    assert result.returncode == 0, result.stderr
    return result.stdout, result.stderr


def test_a_quiet_load_prints_nothing_on_stderr(quiet_load: tuple[str, str]) -> None:
    stdout, stderr = quiet_load
    assert stderr == ""
    assert "rows added" in stdout


def test_the_summary_range_is_in_exchange_time_to_the_minute(quiet_load: tuple[str, str]) -> None:
    stdout, _ = quiet_load
    assert "2024-01-02 09:30 → 2024-03-28 16:00 America/New_York" in stdout
    assert "+00:00" not in stdout and "T05:" not in stdout


def _runs_json(env: dict[str, str], *args: str) -> list[dict[str, object]]:
    result = candleflow(env, "runs", "--json", *args)
    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)
    assert isinstance(listed, list)
    return listed


def test_runs_json_lists_objects_with_whole_ids(
    quiet_load: tuple[str, str], cli_env: dict[str, str]
) -> None:
    listed = _runs_json(cli_env, "--limit", "5")
    assert listed
    for run in listed:
        assert set(run) == {"id", "name", "state", "progress", "started", "stage"}
        assert isinstance(run["id"], str) and len(run["id"]) == 36
    loads = [run for run in listed if run["name"] == "load AAPL 1d tail"]
    assert loads and loads[0]["state"] == "Completed" and loads[0]["progress"] == 100.0


def test_runs_shows_unique_prefixes_and_whole_ids_with_wide(
    quiet_load: tuple[str, str], cli_env: dict[str, str]
) -> None:
    run_id = str(_runs_json(cli_env, "--limit", "1")[0]["id"])
    short = candleflow(cli_env, "runs", "--limit", "1")
    assert short.returncode == 0 and run_id[:8] in short.stdout and run_id not in short.stdout
    wide = candleflow(cli_env, "runs", "--limit", "1", "--wide")
    assert wide.returncode == 0 and run_id in wide.stdout, wide.stdout


def test_watch_and_cancel_take_a_unique_prefix(
    quiet_load: tuple[str, str], cli_env: dict[str, str]
) -> None:
    listed = _runs_json(cli_env, "--limit", "200")
    ids = [str(run["id"]) for run in listed]
    run = next(r for r in listed if r["name"] == "load AAPL 1d tail")
    run_id = str(run["id"])
    prefix = next(
        run_id[:n] for n in range(4, 37) if sum(i.startswith(run_id[:n]) for i in ids) == 1
    )
    watched = candleflow(cli_env, "watch", prefix)
    assert watched.returncode == 0, watched.stderr
    assert watched.stdout.strip() == "load AAPL 1d tail: Completed"
    cancelled = candleflow(cli_env, "cancel", prefix.upper())  # a finished run cannot be
    assert cancelled.returncode == 1, cancelled.stdout + cancelled.stderr
    assert "cannot cancel load AAPL 1d tail" in one_line(cancelled.stderr)


def test_an_unknown_or_ambiguous_prefix_is_bad_input(
    quiet_load: tuple[str, str], cli_env: dict[str, str]
) -> None:
    ids = [str(run["id"]) for run in _runs_json(cli_env, "--limit", "200")]
    unknown = next(c for c in "0123456789abcdef" if not any(i.startswith(c) for i in ids))
    result = candleflow(cli_env, "watch", unknown)
    assert result.returncode == 2 and "no flow run id starts with" in one_line(result.stderr)
    shared = [c for c in "0123456789abcdef" if sum(i.startswith(c) for i in ids) > 1]
    if not shared:  # too few runs in this session to share a first character
        pytest.skip("no two runs share a first character (see tests/core/test_cli_run_ids.py)")
    for command in ("watch", "cancel"):
        result = candleflow(cli_env, command, shared[0])
        assert result.returncode == 2, result.stdout + result.stderr
        line = one_line(result.stderr)
        assert "ambiguous" in line and "give more of the id" in line
        candidates = [i for i in ids if i.startswith(shared[0])]
        assert candidates[0] in line
