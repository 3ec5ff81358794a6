"""A universe of symbols to backfill: parsed from a list, a YAML file or a CSV file.

Every entry is a :class:`UniverseEntry` — an instrument spec (a stock ``AAPL``, a forex pair
``EUR.USD``, a future ``ES:fut`` / ``ESZ6``, an index ``SPX:ind``; see
:mod:`candleflow.instruments`) in its canonical form, the exchange calendar its bars follow and,
optionally, the source to load it from (otherwise the backfill's default source). An entry that
names no calendar takes its class's: ``FX`` (24/5) for a pair, ``GLOBEX`` for a future, the
exchange's for a stock or an index; a file-level default ``exchange`` applies to its stocks
only, so one universe may mix stocks, pairs and futures. Accepted forms:

- a list of symbols or mappings: ``["AAPL", {"symbol": "SAP", "exchange": "XETR"}]``, or a
  comma-separated string of symbols (``"AAPL,MSFT"``);
- a YAML file holding such a list, or a mapping ``{exchange: XNYS, symbols: [...]}`` whose
  ``exchange``/``source`` are the defaults of its entries;
- a CSV file with a header naming ``symbol`` and optionally ``exchange`` (or ``calendar``) and
  ``source``.

Errors name the file and the line (YAML entries by position, CSV rows by line number), the value
and what to write instead. Duplicate symbols are rejected, not silently merged.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from candleflow.errors import InvalidRequest
from candleflow.instruments import AssetClass, parse_instrument
from candleflow.loading.calendars import DEFAULT_CALENDAR, get_calendar
from candleflow.models import parse_symbol
from candleflow.store.bar_store import validate_source_name

__all__ = ["UniverseEntry", "parse_universe"]

_SUFFIXES_YAML = (".yaml", ".yml")
_SUFFIXES_CSV = (".csv",)
_KEYS = frozenset({"symbol", "exchange", "calendar", "source"})


@dataclass(frozen=True, slots=True)
class UniverseEntry:
    """One symbol of a universe: its exchange calendar and, optionally, its own source."""

    symbol: str
    exchange: str = DEFAULT_CALENDAR
    source: str | None = None

    def to_dict(self) -> dict[str, str | None]:
        return {"symbol": self.symbol, "exchange": self.exchange, "source": self.source}


def _entry(
    symbol: object, exchange: object, source: object, where: str, default_exchange: object = None
) -> UniverseEntry:
    if not isinstance(symbol, str) or not symbol.strip():
        raise InvalidRequest(f"{where}: missing symbol; write e.g. 'AAPL' or {{symbol: AAPL}}")
    try:
        sym = parse_symbol(symbol)
    except InvalidRequest as exc:
        raise InvalidRequest(f"{where}: {exc}") from None
    spec = parse_instrument(sym)
    if exchange in (None, "") and spec.asset_class is AssetClass.STOCK:
        exchange = default_exchange
    cal = spec.calendar if exchange in (None, "") else str(exchange).strip()
    try:
        get_calendar(cal)
    except InvalidRequest as exc:
        raise InvalidRequest(f"{where}: {exc}") from None
    src: str | None = None
    if source not in (None, ""):
        src = str(source).strip().lower()
        try:
            validate_source_name(src)
        except InvalidRequest as exc:
            raise InvalidRequest(f"{where}: {exc}") from None
    return UniverseEntry(sym, cal, src)


def _from_item(item: object, where: str, defaults: Mapping[str, object]) -> UniverseEntry:
    if isinstance(item, str):
        return _entry(item, None, defaults.get("source"), where, defaults.get("exchange"))
    if isinstance(item, Mapping):
        unknown = sorted(str(k) for k in item if k not in _KEYS)
        if unknown:
            raise InvalidRequest(
                f"{where}: unknown key(s) {', '.join(unknown)}; use symbol, exchange, source"
            )
        exchange = item.get("exchange", item.get("calendar"))
        return _entry(item.get("symbol"), exchange, item.get("source", defaults.get("source")),
                      where, defaults.get("exchange"))  # fmt: skip
    raise InvalidRequest(
        f"{where}: expected a symbol or a mapping with 'symbol', got {type(item).__name__} {item!r}"
    )


def _from_items(
    items: Sequence[object], origin: str, defaults: Mapping[str, object], lines: Sequence[int] = ()
) -> list[UniverseEntry]:
    entries: list[UniverseEntry] = []
    seen: dict[str, str] = {}
    for i, item in enumerate(items):
        where = f"{origin} line {lines[i]}" if i < len(lines) else f"{origin} entry {i + 1}"
        entry = _from_item(item, where, defaults)
        if entry.symbol in seen:
            raise InvalidRequest(
                f"{where}: symbol {entry.symbol} is listed twice (first at {seen[entry.symbol]});"
                " list each symbol once"
            )
        seen[entry.symbol] = where
        entries.append(entry)
    if not entries:
        raise InvalidRequest(f"{origin}: the universe is empty; list at least one symbol")
    return entries


def _yaml_lines(text: str) -> list[int]:
    """Line numbers of the top-level sequence items (for error messages), best effort."""
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return []
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if getattr(key, "value", None) == "symbols":
                node = value
                break
    if isinstance(node, yaml.SequenceNode):
        return [item.start_mark.line + 1 for item in node.value]
    return []


def _read_yaml(path: Path) -> list[UniverseEntry]:
    text = path.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise InvalidRequest(f"{path}{line}: not valid YAML ({exc})") from None
    defaults: Mapping[str, object] = {}
    if isinstance(data, Mapping):
        if "symbols" not in data:
            raise InvalidRequest(
                f"{path}: a mapping needs a 'symbols' list, e.g. symbols: [AAPL, MSFT]"
            )
        defaults = {k: v for k, v in data.items() if k in ("exchange", "source")}
        data = data["symbols"]
    if not isinstance(data, list):
        raise InvalidRequest(f"{path}: expected a list of symbols, got {type(data).__name__}")
    return _from_items(data, str(path), defaults, _yaml_lines(text))


def _read_csv(path: Path) -> list[UniverseEntry]:
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            raise InvalidRequest(f"{path}: empty file; write a header 'symbol,exchange,source'")
        names = [h.strip().lower() for h in header]
        if "symbol" not in names:
            raise InvalidRequest(
                f"{path} line 1: no 'symbol' column in the header {header!r}; "
                "write e.g. 'symbol,exchange,source'"
            )
        unknown = [n for n in names if n and n not in _KEYS]
        if unknown:
            raise InvalidRequest(
                f"{path} line 1: unknown column(s) {', '.join(unknown)}; use symbol, exchange, "
                "source"
            )
        items: list[object] = []
        lines: list[int] = []
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            if len(row) > len(names):
                raise InvalidRequest(
                    f"{path} line {reader.line_num}: {len(row)} fields but the header has "
                    f"{len(names)}"
                )
            items.append({n: c.strip() for n, c in zip(names, row, strict=False) if n})
            lines.append(reader.line_num)
    return _from_items(items, str(path), {}, lines)


def parse_universe(value: object) -> list[UniverseEntry]:
    """The entries of a universe given as a list, a comma-separated string or a file path."""
    if isinstance(value, os.PathLike) or (
        isinstance(value, str) and value.strip().lower().endswith(_SUFFIXES_YAML + _SUFFIXES_CSV)
    ):
        path = Path(os.fspath(value)).expanduser()
        if not path.is_file():
            raise InvalidRequest(f"universe file {path} not found; give a YAML or CSV file")
        suffix = path.suffix.lower()
        if suffix in _SUFFIXES_CSV:
            return _read_csv(path)
        if suffix in _SUFFIXES_YAML:
            return _read_yaml(path)
        raise InvalidRequest(f"universe file {path}: use a .yaml, .yml or .csv file")
    if isinstance(value, str):
        items: list[object] = [s for s in (p.strip() for p in value.split(",")) if s]
        return _from_items(items, "universe", {})
    if isinstance(value, Sequence):
        return _from_items(list(value), "universe", {})
    raise InvalidRequest(
        f"universe must be a list of symbols or a .yaml/.csv file, got {type(value).__name__}"
    )
