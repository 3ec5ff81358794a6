"""``candleflow store migrate`` and ``candleflow query`` as commands (registered on an app of
their own here, as the CLI's app registers them)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from typer.testing import CliRunner

from candleflow.cli import query as cli_query
from candleflow.cli import store_cmd
from candleflow.store.bar_store import BarStore
from tests.store.test_migrate_query import _old_layout_store


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """candleflow"""

    store_cmd.register(app)
    cli_query.register(app)
    return app


def test_migrate_then_query_json_counts_each_symbol(tmp_path: Path) -> None:
    frames = _old_layout_store(tmp_path)
    runner = CliRunner()
    moved = runner.invoke(_app(), ["store", "migrate", "--store", str(tmp_path), "--json"])
    assert moved.exit_code == 0, moved.output
    assert json.loads(moved.output)["rows"] == sum(len(f) for f in frames.values())
    again = runner.invoke(_app(), ["store", "migrate", "--store", str(tmp_path)])
    assert again.exit_code == 0 and "already in the key=value layout" in again.output

    sql = "select symbol, count(*) as n from bars group by symbol order by symbol"
    answer = runner.invoke(_app(), ["query", sql, "--store", str(tmp_path), "--json"])
    assert answer.exit_code == 0, answer.output
    per_symbol: dict[str, int] = {}
    for (_, symbol, _), frame in frames.items():
        per_symbol[symbol] = per_symbol.get(symbol, 0) + len(frame)
    assert json.loads(answer.output) == [
        {"symbol": s, "n": n} for s, n in sorted(per_symbol.items())
    ]

    shown = runner.invoke(_app(), ["query", sql, "--store", str(tmp_path)])
    assert shown.exit_code == 0 and "EURUSD=X" in shown.output


def test_query_on_an_s3_root(s3_root: str) -> None:
    store = BarStore(s3_root)
    frame = _old_layout_store.__globals__["_bars"]("AAPL", "1d", "2024-01-01", "2024-03-01")
    store.write("synthetic", "AAPL", "1d", frame)
    answer = CliRunner().invoke(
        _app(),
        ["query", "select min(timestamp) as t, count(*) as n from bars", "--store", s3_root,
         "--json"],
    )  # fmt: skip
    assert answer.exit_code == 0, answer.output
    (row,) = json.loads(answer.output)
    assert row == {"t": frame.index[0].isoformat(), "n": len(frame)}


def test_a_store_that_does_not_exist_is_bad_input(tmp_path: Path) -> None:
    from candleflow.errors import InvalidRequest

    missing = str(tmp_path / "nope")
    for args in (
        ["query", "select 1", "--store", missing],
        ["store", "migrate", "--store", missing],
    ):
        result = CliRunner().invoke(_app(), args)
        assert isinstance(result.exception, InvalidRequest)
        assert "does not exist" in str(result.exception)
