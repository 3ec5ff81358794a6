"""Instrument specs: the text a user writes for what to load, read into an asset class.

A ticker alone is a stock (``AAPL``). Where it is ambiguous the spec names the class after a
colon, and a few unambiguous shapes are recognised without one:

============================== ============ ==============================================
spec                           class        IB contract
============================== ============ ==============================================
``AAPL``, ``AAPL:stk``         stock        ``Stock('AAPL', 'SMART', 'USD')``
``EUR.USD``, ``EURUSD:fx``     forex        ``Forex('EURUSD')`` on IDEALPRO, MIDPOINT bars
``ES:fut``                     continuous   ``ContFuture('ES', 'CME')``
``ESZ6``, ``ES:fut:202612``    dated future ``Future('ES', '202612', 'CME')``
``SPX:ind``                    index        ``Index('SPX', 'CBOE')``
============================== ============ ==============================================

``EUR.USD`` is forex only when both sides are currency codes (``BRK.B`` stays a stock);
``ESZ6`` (root, month code, one or two year digits) is a dated future only for a futures root
this module knows (:data:`FUTURES_EXCHANGES`); any other root takes ``ROOT:fut:YYYYMM``. The
exchange and currency may be overridden (IB needs them for stocks outside the US, and for futures
and indices it does not know here). Every spec has one canonical text (:attr:`InstrumentSpec.key`,
what :func:`candleflow.models.parse_symbol` returns and the store files a series under), so
``eurusd:fx`` and ``EUR.USD`` are one series.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from enum import StrEnum

from candleflow.errors import InvalidRequest

__all__ = [
    "CURRENCIES",
    "FUTURES_EXCHANGES",
    "INDEX_EXCHANGES",
    "MONTH_CODES",
    "AssetClass",
    "InstrumentSpec",
    "default_calendar",
    "parse_instrument",
]

#: Calendar names registered by :mod:`candleflow.loading.calendars` (kept here as plain text so
#: this module needs no calendar import).
FX_CALENDAR = "FX"
GLOBEX_CALENDAR = "GLOBEX"


class AssetClass(StrEnum):
    """What kind of instrument a spec names; the values are the spec suffixes."""

    STOCK = "stk"
    FOREX = "fx"
    FUTURE = "fut"
    INDEX = "ind"


_CLASS_WORDS: dict[str, AssetClass] = {
    "stk": AssetClass.STOCK, "stock": AssetClass.STOCK, "etf": AssetClass.STOCK,
    "fx": AssetClass.FOREX, "cash": AssetClass.FOREX, "forex": AssetClass.FOREX,
    "fut": AssetClass.FUTURE, "future": AssetClass.FUTURE, "contfut": AssetClass.FUTURE,
    "ind": AssetClass.INDEX, "index": AssetClass.INDEX,
}  # fmt: skip

#: Currency codes IDEALPRO quotes (an ``XXX.YYY`` of two of them is a forex pair).
CURRENCIES: frozenset[str] = frozenset(
    [
        "USD",
        "EUR",
        "JPY",
        "GBP",
        "CHF",
        "AUD",
        "NZD",
        "CAD",
        "SEK",
        "NOK",
        "DKK",
        "HKD",
        "SGD",
        "CNH",
        "MXN",
        "ZAR",
        "TRY",
        "PLN",
        "HUF",
        "CZK",
        "ILS",
        "KRW",
        "RUB",
        "INR",
    ]
)

#: Futures month codes (January … December).
MONTH_CODES = "FGHJKMNQUVXZ"

#: IB exchange of the futures roots a spec may name without ``--exchange``.
FUTURES_EXCHANGES: dict[str, str] = {
    **dict.fromkeys(
        [
            "ES",
            "NQ",
            "RTY",
            "MES",
            "MNQ",
            "M2K",
            "EMD",
            "HE",
            "LE",
            "GF",
            "SR3",
            "BTC",
            "MBT",
            "ETH",
            "MET",
        ],
        "CME",
    ),
    **dict.fromkeys(
        ["YM", "MYM", "ZN", "ZB", "ZF", "ZT", "UB", "TN", "ZC", "ZS", "ZW", "ZM", "ZL", "ZO", "KE"],
        "CBOT",
    ),
    **dict.fromkeys(["CL", "NG", "RB", "HO", "MCL", "QM", "BZ", "PL", "PA"], "NYMEX"),
    **dict.fromkeys(["GC", "SI", "HG", "MGC", "SIL", "QO", "QI"], "COMEX"),
}

#: IB exchange of the indices a spec may name without ``--exchange``.
INDEX_EXCHANGES: dict[str, str] = {
    "SPX": "CBOE", "VIX": "CBOE", "XSP": "CBOE", "OEX": "CBOE", "DJX": "CBOE",
    "NDX": "NASDAQ", "COMP": "NASDAQ", "RUT": "RUSSELL", "INDU": "CME",
}  # fmt: skip

#: exchange_calendars name of the exchange an index is calculated on, for gap analysis.
_INDEX_CALENDARS: dict[str, str] = {"CBOE": "XNYS", "NASDAQ": "XNYS", "RUSSELL": "XNYS"}
#: Calendars of stock exchanges a ``--exchange`` override may name (else New York's).
_STOCK_CALENDARS: dict[str, str] = {
    "IBIS": "XETR", "FWB": "XFRA", "LSE": "XLON", "LSEETF": "XLON", "SBF": "XPAR",
    "AEB": "XAMS", "EBS": "XSWX", "TSE": "XTSE", "TSEJ": "XTKS", "SEHK": "XHKG", "ASX": "XASX",
    "BVME": "XMIL", "BM": "XMAD",
}  # fmt: skip

_TICKER_RE = re.compile(r"[A-Z0-9_^=\-][A-Z0-9._^=\-]{0,31}")
_ROOT_RE = re.compile(r"[A-Z0-9]{1,6}")
_LOCAL_FUTURE_RE = re.compile(rf"([A-Z0-9]{{1,5}}?)([{MONTH_CODES}])(\d{{1,2}})")
_EXPIRY_RE = re.compile(r"(\d{4})(\d{2})(\d{2})?")
_EXCHANGE_RE = re.compile(r"[A-Z][A-Z0-9.]{0,15}")
_SPEC_HELP = (
    "write a stock ticker (AAPL), a forex pair (EUR.USD or EURUSD:fx), a continuous future "
    "(ES:fut), a dated future (ESZ6 or ES:fut:202612) or an index (SPX:ind)"
)


@dataclass(frozen=True, slots=True)
class InstrumentSpec:
    """A parsed instrument spec: what to ask a source for.

    ``symbol`` is IB's symbol (the base currency of a pair, the root of a future); ``expiry`` is
    ``YYYYMM`` or ``YYYYMMDD`` for a dated future and empty otherwise; ``exchange`` is empty when
    IB should find it (a future or an index this module does not know).
    """

    symbol: str
    asset_class: AssetClass = AssetClass.STOCK
    exchange: str = "SMART"
    currency: str = "USD"
    expiry: str = ""

    @property
    def key(self) -> str:
        """The canonical spec text: ``AAPL``, ``EUR.USD``, ``ES:FUT``, ``ES:FUT:202612``,
        ``SPX:IND``. It parses back to this spec (given the same exchange and currency)."""
        if self.asset_class is AssetClass.FOREX:
            return f"{self.symbol}.{self.currency}"
        if self.asset_class is AssetClass.FUTURE:
            return f"{self.symbol}:FUT:{self.expiry}" if self.expiry else f"{self.symbol}:FUT"
        if self.asset_class is AssetClass.INDEX:
            return f"{self.symbol}:IND"
        return self.symbol

    @property
    def sec_type(self) -> str:
        """IB's security type: ``STK``, ``CASH``, ``CONTFUT``, ``FUT`` or ``IND``."""
        if self.asset_class is AssetClass.FUTURE:
            return "FUT" if self.expiry else "CONTFUT"
        return {AssetClass.STOCK: "STK", AssetClass.FOREX: "CASH", AssetClass.INDEX: "IND"}[
            self.asset_class
        ]

    @property
    def what_to_show(self) -> str:
        """The bar type IB serves for the class: ``MIDPOINT`` for forex (IB has no FX trades),
        ``TRADES`` for the rest."""
        return "MIDPOINT" if self.asset_class is AssetClass.FOREX else "TRADES"

    @property
    def calendar(self) -> str:
        """The exchange_calendars name the bars follow (see :func:`default_calendar`)."""
        if self.asset_class is AssetClass.FOREX:
            return FX_CALENDAR
        if self.asset_class is AssetClass.FUTURE:
            return GLOBEX_CALENDAR
        if self.asset_class is AssetClass.INDEX:
            return _INDEX_CALENDARS.get(self.exchange, "XNYS")
        return _STOCK_CALENDARS.get(self.exchange, "XNYS")


def _future_year(digits: str, today: dt.date) -> int:
    """The year of a local-symbol year (``6`` or ``26``): the one in [today-2, today+7]."""
    if len(digits) == 2:
        return 2000 + int(digits)
    year = today.year - 2
    while year % 10 != int(digits):
        year += 1
    return year


def _expiry(text: str, spec: str) -> str:
    match = _EXPIRY_RE.fullmatch(text)
    if match is None or not 1 <= int(match.group(2)) <= 12:
        raise InvalidRequest(
            f"invalid future expiry {text!r} in {spec!r}: write the contract month as YYYYMM "
            "(e.g. ES:fut:202612) or the last trading day as YYYYMMDD",
            param="symbol",
            value=spec,
        )
    if match.group(3) is not None:
        try:
            dt.date(int(match.group(1)), int(match.group(2)), int(match.group(3)))
        except ValueError:
            raise InvalidRequest(
                f"invalid future expiry {text!r} in {spec!r}: no such day",
                param="symbol",
                value=spec,
            ) from None
    return text


def _name(text: str, what: str, pattern: re.Pattern[str], spec: str) -> str:
    value = text.strip().upper()
    if pattern.fullmatch(value) is None:
        raise InvalidRequest(
            f"invalid {what} {text!r} in instrument spec {spec!r}; {_SPEC_HELP}",
            param="symbol",
            value=spec,
        )
    return value


def parse_instrument(
    spec: str,
    *,
    exchange: str | None = None,
    currency: str | None = None,
    today: dt.date | None = None,
) -> InstrumentSpec:
    """Read an instrument spec (see the module docstring); ``InvalidRequest`` when malformed.

    ``exchange`` (an IB exchange: ``SMART``, ``IBIS``, ``CME``…) and ``currency`` override the
    class defaults; a forex pair's currency is its quote currency and may not be overridden
    otherwise. ``today`` (default: the UTC date) resolves one-digit years of local symbols such
    as ``ESZ6`` to the year ending in that digit between two years ago and seven years ahead.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise InvalidRequest(
            f"instrument spec must be a non-empty string, got {spec!r}; {_SPEC_HELP}",
            param="symbol",
            value=spec,
        )
    text = spec.strip().upper()
    parts = text.split(":")
    if len(parts) > 3 or any(not p.strip() for p in parts):
        raise InvalidRequest(
            f"malformed instrument spec {spec!r}: use SYMBOL[:CLASS[:EXPIRY]]; {_SPEC_HELP}",
            param="symbol",
            value=spec,
        )
    head = parts[0].strip()
    cls: AssetClass | None = None
    if len(parts) >= 2:
        cls = _CLASS_WORDS.get(parts[1].strip().lower())
        if cls is None:
            raise InvalidRequest(
                f"unknown asset class {parts[1]!r} in {spec!r}: use stk, fx, fut or ind",
                param="symbol",
                value=spec,
            )
    if len(parts) == 3 and cls is not AssetClass.FUTURE:
        raise InvalidRequest(
            f"only futures take an expiry ({spec!r}); write e.g. ES:fut:202612",
            param="symbol",
            value=spec,
        )
    exch = None if exchange in (None, "") else _name(str(exchange), "exchange", _EXCHANGE_RE, spec)
    cur = None if currency in (None, "") else _name(str(currency), "currency", _EXCHANGE_RE, spec)
    if cur is not None and (len(cur) != 3 or not cur.isalpha()):
        raise InvalidRequest(
            f"invalid currency {currency!r}: use a three-letter code such as USD or EUR",
            param="currency",
            value=currency,
        )
    if cls is None:
        cls = _guess_class(head)
    if cls is AssetClass.FOREX:
        return _forex(head, exch, cur, spec)
    if cls is AssetClass.FUTURE:
        expiry = _expiry(parts[2].strip(), spec) if len(parts) == 3 else ""
        return _future(head, expiry, exch, cur, spec, today or dt.datetime.now(dt.UTC).date())
    if cls is AssetClass.INDEX:
        symbol = _name(head, "index symbol", _TICKER_RE, spec)
        return InstrumentSpec(
            symbol, AssetClass.INDEX, exch or INDEX_EXCHANGES.get(symbol, ""), cur or "USD"
        )
    symbol = _name(head, "ticker", _TICKER_RE, spec)
    return InstrumentSpec(symbol, AssetClass.STOCK, exch or "SMART", cur or "USD")


def _guess_class(head: str) -> AssetClass:
    base, dot, quote = head.partition(".")
    if dot and base in CURRENCIES and quote in CURRENCIES:
        return AssetClass.FOREX
    local = _LOCAL_FUTURE_RE.fullmatch(head)
    if local is not None and local.group(1) in FUTURES_EXCHANGES:
        return AssetClass.FUTURE
    return AssetClass.STOCK


def _forex(head: str, exch: str | None, cur: str | None, spec: str) -> InstrumentSpec:
    pair = head.replace(".", "").replace("/", "")
    base, quote = pair[:3], pair[3:]
    if len(pair) != 6 or base not in CURRENCIES or quote not in CURRENCIES or base == quote:
        raise InvalidRequest(
            f"invalid forex pair {head!r} in {spec!r}: write two currency codes, e.g. EUR.USD "
            f"or EURUSD:fx (known: {', '.join(sorted(CURRENCIES))})",
            param="symbol",
            value=spec,
        )
    if cur is not None and cur != quote:
        raise InvalidRequest(
            f"currency {cur} contradicts the quote currency of {base}.{quote}; leave it out",
            param="currency",
            value=cur,
        )
    return InstrumentSpec(base, AssetClass.FOREX, exch or "IDEALPRO", quote)


def _future(
    head: str, expiry: str, exch: str | None, cur: str | None, spec: str, today: dt.date
) -> InstrumentSpec:
    root = head
    local = _LOCAL_FUTURE_RE.fullmatch(head)
    if not expiry and local is not None and head not in FUTURES_EXCHANGES:
        # ESZ6 / ESZ26: a local symbol names root, month and year.
        root = local.group(1)
        year = _future_year(local.group(3), today)
        expiry = f"{year:04d}{MONTH_CODES.index(local.group(2)) + 1:02d}"
    root = _name(root, "futures root", _ROOT_RE, spec)
    return InstrumentSpec(
        root, AssetClass.FUTURE, exch or FUTURES_EXCHANGES.get(root, ""), cur or "USD", expiry
    )


def default_calendar(spec: str) -> str:
    """The exchange_calendars name bars of ``spec`` follow: ``FX`` (24/5, New York 17:00) for
    forex, ``GLOBEX`` (CME's calendar with its daily maintenance break) for futures, the
    exchange's calendar for stocks and indices (``XNYS`` for US ones)."""
    return parse_instrument(spec).calendar
