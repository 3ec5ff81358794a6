"""Universe parsing: lists, YAML and CSV files, and errors that name the file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from candleflow.errors import InvalidRequest
from candleflow.loading.universe import UniverseEntry, parse_universe

ROOT = Path(__file__).resolve().parents[2]


def test_a_list_of_symbols_and_mappings() -> None:
    entries = parse_universe(["aapl", {"symbol": "SAP", "exchange": "XETR", "source": "ib"}])
    assert entries == [UniverseEntry("AAPL", "XNYS", None), UniverseEntry("SAP", "XETR", "ib")]
    assert parse_universe("AAPL, MSFT") == [UniverseEntry("AAPL"), UniverseEntry("MSFT")]


def test_a_yaml_mapping_gives_defaults_to_its_entries(tmp_path: Path) -> None:
    path = tmp_path / "u.yaml"
    path.write_text(
        "exchange: XLON\nsource: files\nsymbols:\n  - VOD\n  - {symbol: BP, source: ib}\n"
    )
    assert parse_universe(str(path)) == [
        UniverseEntry("VOD", "XLON", "files"),
        UniverseEntry("BP", "XLON", "ib"),
    ]


def test_a_csv_file(tmp_path: Path) -> None:
    path = tmp_path / "u.csv"
    path.write_text("symbol,exchange,source\nAAPL,XNYS,\n\nSAP,XETR,synthetic\n")
    assert parse_universe(path) == [
        UniverseEntry("AAPL", "XNYS", None),
        UniverseEntry("SAP", "XETR", "synthetic"),
    ]


@pytest.mark.parametrize(
    ("name", "text", "needles"),
    [
        ("bad.csv", "symbol,exchange\nAAPL,XNYS\nMSFT,NOPE\n", ["bad.csv line 3", "NOPE"]),
        ("bad.csv", "ticker\nAAPL\n", ["bad.csv line 1", "symbol"]),
        ("bad.csv", "symbol\nAAPL\nBAD SYMBOL\n", ["bad.csv line 3", "BAD SYMBOL"]),
        ("bad.csv", "symbol\nAAPL\naapl\n", ["line 3", "listed twice", "line 2"]),
        ("bad.yaml", "- AAPL\n- {symbol: MSFT, exchnge: XNYS}\n", ["bad.yaml line 2", "exchnge"]),
        ("bad.yaml", "- AAPL\n- [x]\n", ["bad.yaml line 2", "mapping"]),
        ("bad.yaml", "symbols: [AAPL\n", ["bad.yaml line", "YAML"]),
        ("bad.yaml", "tickers: [AAPL]\n", ["bad.yaml", "symbols"]),
        ("bad.yaml", "[]\n", ["bad.yaml", "empty"]),
    ],
)
def test_errors_name_the_file_the_line_and_the_value(
    tmp_path: Path, name: str, text: str, needles: list[str]
) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(InvalidRequest) as info:
        parse_universe(str(path))
    for needle in needles:
        assert needle in str(info.value)


def test_a_missing_file_and_a_wrong_type_are_clear() -> None:
    with pytest.raises(InvalidRequest, match="not found"):
        parse_universe("nowhere/universe.yaml")
    with pytest.raises(InvalidRequest, match="list of symbols"):
        parse_universe(42)


def test_the_shipped_default_universe_parses() -> None:
    entries = parse_universe(ROOT / "deployments" / "universe.yaml")
    assert len(entries) >= 3 and all(e.exchange for e in entries)


def test_a_mixed_universe_gives_each_instrument_its_class_calendar(tmp_path: Path) -> None:
    assert parse_universe("AAPL, eurusd:fx, ES:fut:202612, SPX:ind, ES:fut") == [
        UniverseEntry("AAPL", "XNYS"),
        UniverseEntry("EUR.USD", "FX"),
        UniverseEntry("ES:FUT:202612", "GLOBEX"),
        UniverseEntry("SPX:IND", "XNYS"),
        UniverseEntry("ES:FUT", "GLOBEX"),
    ]
    path = tmp_path / "u.yaml"
    # The file's default exchange is for its stocks; a pair keeps 24/5 unless it names a calendar.
    path.write_text("exchange: XLON\nsymbols:\n  - VOD\n  - GBP.USD\n"
                    "  - {symbol: EUR.GBP, exchange: XLON}\n")  # fmt: skip
    assert parse_universe(str(path)) == [
        UniverseEntry("VOD", "XLON"),
        UniverseEntry("GBP.USD", "FX"),
        UniverseEntry("EUR.GBP", "XLON"),
    ]
    csv = tmp_path / "u.csv"
    csv.write_text("symbol,exchange\nEUR.USD,\nCL:fut,\nMSFT,XNAS\n")
    assert [(e.symbol, e.exchange) for e in parse_universe(str(csv))] == [
        ("EUR.USD", "FX"), ("CL:FUT", "GLOBEX"), ("MSFT", "XNAS"),
    ]  # fmt: skip


def test_one_instrument_written_two_ways_is_listed_twice() -> None:
    with pytest.raises(InvalidRequest, match=r"EUR\.USD is listed twice"):
        parse_universe(["EUR.USD", "eurusd:fx"])
    with pytest.raises(InvalidRequest, match="unknown asset class"):
        parse_universe(["AAPL:bond"])
