"""The feature catalogue: technical indicators computed from bars, chosen by a spec (DESIGN §6).

A :class:`FeatureSpec` names feature kinds and their windows — ``{"sma": [10, 20], "rsi": [14],
"macd": [[12, 26, 9]], "bb": [[20, 2]], "vol": [20, [20, 252]]}`` as a mapping or YAML text, or
``"default"`` — and :func:`compute_features` computes them for one series, vectorised over rows
(the array maths is in :mod:`candleflow.features.indicators`), reporting ``Feature i/N`` through a
progress :class:`~candleflow.progress.Span`. Every column is float64 and aligned to the
bars; warm-up rows are NaN, never back-filled. Column names are stable:

=========  ==========================  ==========================================================
kind       spec value                  columns and definition
=========  ==========================  ==========================================================
ret        k ≥ 1                       ``ret_k`` = close[t] / close[t-k] − 1
logret     k ≥ 1                       ``logret_k`` = ln(close[t] / close[t-k])
sma        n ≥ 1                       ``sma_n`` = mean of the last n closes
ema        n ≥ 1                       ``ema_n``: α = 2/(n+1), seeded with the SMA of the first
                                       n closes at row n−1, then α·close + (1−α)·ema[t-1]
rsi        n ≥ 1                       ``rsi_n`` (Wilder): gains/losses of close-to-close changes;
                                       first averages are the simple means of changes 1..n (row
                                       n), then avg = ((n−1)·avg + x)/n; 100 − 100/(1 + AG/AL);
                                       100 when AL = 0 < AG, NaN when both are 0 (undefined)
macd       [fast, slow, signal]        ``macd_f_s_g`` = ema_f − ema_s (each seeded as above),
                                       ``macd_signal_f_s_g`` = EMA(g) of the line (seeded with the
                                       SMA of its first g values), ``macd_hist_f_s_g`` = line −
                                       signal; fast < slow
atr        n ≥ 1                       ``atr_n`` (Wilder): TR[t] = max(high−low, |high−close[t-1]|,
                                       |low−close[t-1]|) from row 1; first ATR = mean(TR 1..n) at
                                       row n, then ((n−1)·atr + TR)/n
bb         n ≥ 2 or [n, k]  (k = 2)    ``bb_mid_n_k`` = sma_n; ``bb_upper``/``bb_lower`` = mid ± k·σ
                                       with the *population* σ (ddof 0, Bollinger's definition);
                                       ``bb_pctb_n_k`` = (close − lower)/(upper − lower), NaN for
                                       a zero-width band. A fractional k is written ``2p5``.
vol        n ≥ 2 or [n, periods]       ``vol_n`` = *sample* σ (ddof 1) of the last n one-bar log
                                       returns; ``vol_n_annP`` = that × √P for P periods a year
                                       (P is explicit: bars per year depend on the calendar)
volz       n ≥ 2                       ``volz_n`` = (volume − mean)/σ over the last n volumes
                                       including the current one, sample σ; NaN when σ = 0 or a
                                       volume in the window is missing
=========  ==========================  ==========================================================

Exactness of incremental updates: a windowed feature's value is computed from its window alone,
summing in a fixed order (:func:`~candleflow.features.indicators.window_sums`), so it is
bit-identical whether the series is computed from row 0 or from a later row with ``lookback`` rows
of context. A recursive feature (EMA, RSI, ATR, MACD) depends on all earlier rows; its recurrence
state at a row (``state_columns`` — the output itself for EMA/ATR, the Wilder averages for RSI, the
two EMAs plus the signal for MACD) is kept, and :func:`compute_feature_rows` continues the same
recurrence from the state of the row before, which reproduces a full recomputation bit for bit.
:mod:`candleflow.features.store` stores those states in ``_state_*`` columns beside the values.

Why one module of ~700 lines: it is one table — each kind's parser, column names, warm-up length,
full computation and incremental step sit next to each other in the catalogue, so that a kind is
added or changed in one place (the array maths lives apart, in ``indicators``).
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import pandas as pd
import yaml

from candleflow.errors import InvalidRequest
from candleflow.features import indicators
from candleflow.features.indicators import F64
from candleflow.progress import Span

__all__ = [
    "DEFAULT_SPEC",
    "FEATURE_KINDS",
    "MAX_WINDOW",
    "Feature",
    "FeatureKind",
    "FeatureSpec",
    "compute_feature_rows",
    "compute_features",
    "parse_feature_spec",
]

logger = logging.getLogger(__name__)

Param = int | float

#: The largest window accepted (the window sums cost window × rows operations).
MAX_WINDOW: Final = 10_000

# Prefix of columns that carry recursion state rather than a feature value.
STATE_PREFIX: Final = "_state_"


def _name_num(value: Param) -> str:
    # 2.0 → "2", 2.5 → "2p5": a dot in a column name needs quoting in DuckDB and polars.
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value)).replace(".", "p")


def _plain(value: Param) -> Param:
    return int(value) if float(value).is_integer() else float(value)


# -- the kinds: parameters and arrays in, named columns out ---------------------------------------

_Arrays = Mapping[str, F64]
_Out = dict[str, F64]


def _ret(p: tuple[Param, ...], d: _Arrays) -> _Out:
    k = int(p[0])
    return {f"ret_{k}": indicators.simple_return(d["close"], k)}


def _logret(p: tuple[Param, ...], d: _Arrays) -> _Out:
    k = int(p[0])
    return {f"logret_{k}": indicators.log_return(d["close"], k)}


def _sma(p: tuple[Param, ...], d: _Arrays) -> _Out:
    n = int(p[0])
    return {f"sma_{n}": indicators.rolling_mean(d["close"], n)}


def _ema(p: tuple[Param, ...], d: _Arrays) -> _Out:
    n = int(p[0])
    return {f"ema_{n}": indicators.ema(d["close"], n)}


def _ema_next(p: tuple[Param, ...], d: _Arrays, s: Mapping[str, float]) -> _Out:
    n = int(p[0])
    col = f"ema_{n}"
    return {col: indicators.ema_from(s[col], d["close"][1:], n)}


def _rsi_out(n: int, ag: F64, al: F64) -> _Out:
    return {
        f"rsi_{n}": indicators.rsi(ag, al),
        f"{STATE_PREFIX}rsi_{n}_avg_gain": ag,
        f"{STATE_PREFIX}rsi_{n}_avg_loss": al,
    }


def _rsi(p: tuple[Param, ...], d: _Arrays) -> _Out:
    n = int(p[0])
    gain, loss = indicators.gains_losses(d["close"])
    return _rsi_out(n, indicators.wilder(gain, n), indicators.wilder(loss, n))


def _rsi_next(p: tuple[Param, ...], d: _Arrays, s: Mapping[str, float]) -> _Out:
    n = int(p[0])
    gain, loss = indicators.gains_losses(d["close"])
    ag = indicators.wilder_from(s[f"{STATE_PREFIX}rsi_{n}_avg_gain"], gain[1:], n)
    al = indicators.wilder_from(s[f"{STATE_PREFIX}rsi_{n}_avg_loss"], loss[1:], n)
    return _rsi_out(n, ag, al)


def _true_range(d: _Arrays) -> F64:
    return indicators.true_range(d["high"], d["low"], d["close"])


def _atr(p: tuple[Param, ...], d: _Arrays) -> _Out:
    n = int(p[0])
    return {f"atr_{n}": indicators.wilder(_true_range(d), n)}


def _atr_next(p: tuple[Param, ...], d: _Arrays, s: Mapping[str, float]) -> _Out:
    n = int(p[0])
    col = f"atr_{n}"
    return {col: indicators.wilder_from(s[col], _true_range(d)[1:], n)}


def _macd_names(p: tuple[Param, ...]) -> tuple[str, str, str, str, str]:
    tag = "_".join(_name_num(v) for v in p)
    return (
        f"macd_{tag}",
        f"macd_signal_{tag}",
        f"macd_hist_{tag}",
        f"{STATE_PREFIX}macd_{tag}_ema_fast",
        f"{STATE_PREFIX}macd_{tag}_ema_slow",
    )


def _macd(p: tuple[Param, ...], d: _Arrays) -> _Out:
    fast, slow, sig = (int(v) for v in p)
    values = indicators.macd(d["close"], fast, slow, sig)
    return dict(zip(_macd_names(p), values, strict=True))


def _macd_next(p: tuple[Param, ...], d: _Arrays, s: Mapping[str, float]) -> _Out:
    fast, slow, sig = (int(v) for v in p)
    names = _macd_names(p)
    values = indicators.macd_from(
        d["close"][1:],
        fast,
        slow,
        sig,
        prev_fast=s[names[3]],
        prev_slow=s[names[4]],
        prev_signal=s[names[1]],
    )
    return dict(zip(names, values, strict=True))


def _bb(p: tuple[Param, ...], d: _Arrays) -> _Out:
    n, k = int(p[0]), float(p[1])
    tag = f"{n}_{_name_num(k)}"
    mid, upper, lower, pctb = indicators.bollinger(d["close"], n, k)
    return {
        f"bb_mid_{tag}": mid,
        f"bb_upper_{tag}": upper,
        f"bb_lower_{tag}": lower,
        f"bb_pctb_{tag}": pctb,
    }


def _vol_name(p: tuple[Param, ...]) -> str:
    return f"vol_{int(p[0])}" + (f"_ann{_name_num(p[1])}" if len(p) > 1 else "")


def _vol(p: tuple[Param, ...], d: _Arrays) -> _Out:
    periods = float(p[1]) if len(p) > 1 else None
    return {_vol_name(p): indicators.volatility(d["close"], int(p[0]), periods)}


def _volz(p: tuple[Param, ...], d: _Arrays) -> _Out:
    n = int(p[0])
    return {f"volz_{n}": indicators.volume_zscore(d["volume"], n)}


# -- parameters --------------------------------------------------------------------------------


def _window(kind: str, value: object, minimum: int, example: str) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Integral)
        or not minimum <= int(value) <= MAX_WINDOW
    ):
        raise InvalidRequest(
            f"feature {kind!r}: window {value!r} is invalid; use a whole number of bars from "
            f"{minimum} to {MAX_WINDOW:,}, e.g. {kind!r}: {example}"
        )
    return int(value)


def _positive(kind: str, what: str, value: object, example: str) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(float(value))
        or float(value) <= 0
    ):
        raise InvalidRequest(
            f"feature {kind!r}: {what} {value!r} is invalid; use a positive number, "
            f"e.g. {kind!r}: {example}"
        )
    return float(value)


def _items(kind: str, value: object, sizes: tuple[int, ...], example: str) -> list[object]:
    items = list(value) if isinstance(value, list | tuple) else [value]
    if len(items) not in sizes:
        form = " or ".join(f"{s} value{'s' if s > 1 else ''}" for s in sizes)
        raise InvalidRequest(
            f"feature {kind!r}: {value!r} has {len(items)} values, expected {form}; "
            f"e.g. {kind!r}: {example}"
        )
    return items


def _single(minimum: int, example: str) -> Callable[[str, object], tuple[Param, ...]]:
    def parse(kind: str, value: object) -> tuple[Param, ...]:
        (n,) = _items(kind, value, (1,), example)
        return (_window(kind, n, minimum, example),)

    return parse


def _parse_macd(kind: str, value: object) -> tuple[Param, ...]:
    example = "[[12, 26, 9]]"
    fast, slow, sig = (_window(kind, v, 1, example) for v in _items(kind, value, (3,), example))
    if fast >= slow:
        raise InvalidRequest(
            f"feature 'macd': fast window {fast} must be shorter than slow window {slow}; "
            f"e.g. 'macd': {example}"
        )
    return (fast, slow, sig)


def _parse_bb(kind: str, value: object) -> tuple[Param, ...]:
    example = "[[20, 2]]"
    items = _items(kind, value, (1, 2), example)
    n = _window(kind, items[0], 2, example)
    k = _positive(kind, "band width k", items[1], example) if len(items) > 1 else 2.0
    return (n, k)


def _parse_vol(kind: str, value: object) -> tuple[Param, ...]:
    example = "[20, [20, 252]]"
    items = _items(kind, value, (1, 2), example)
    n = _window(kind, items[0], 2, example)
    if len(items) == 1:
        return (n,)
    return (n, _plain(_positive(kind, "periods per year", items[1], example)))


# -- the catalogue -------------------------------------------------------------------------------

_Params = tuple[Param, ...]
_Compute = Callable[[_Params, _Arrays], _Out]
_Resume = Callable[[_Params, _Arrays, Mapping[str, float]], _Out]


@dataclass(frozen=True, slots=True)
class FeatureKind:
    """One entry of the catalogue; ``name`` is the spec key, ``params`` the accepted values.

    The callables take the parsed parameters: ``columns`` the value columns; ``state`` the
    columns holding the recursion state at a row (``()`` for windowed kinds); ``warmup`` how many
    leading rows are NaN in a full computation; ``lookback`` how many rows before a row its value
    depends on (``None`` for recursions: all of them, continued from the state instead);
    ``compute`` the full computation; ``resume`` the continuation from the previous row's state.
    """

    name: str
    summary: str
    params: str
    example: str
    inputs: tuple[str, ...]
    parse: Callable[[str, object], _Params]
    columns: Callable[[_Params], tuple[str, ...]]
    warmup: Callable[[_Params], int]
    lookback: Callable[[_Params], int | None]
    compute: _Compute
    state: Callable[[_Params], tuple[str, ...]] = lambda p: ()
    resume: _Resume | None = None


def _n(p: _Params) -> int:
    return int(p[0])


def _n_minus_1(p: _Params) -> int:
    return int(p[0]) - 1


def _unbounded(p: _Params) -> int | None:
    return None


def _one(prefix: str) -> Callable[[_Params], tuple[str, ...]]:
    return lambda p: (f"{prefix}_{_n(p)}",)


def _bb_columns(p: _Params) -> tuple[str, ...]:
    return tuple(_bb(p, {"close": indicators.nans(0)}))


def _rsi_state(p: _Params) -> tuple[str, ...]:
    return tuple(_rsi_out(_n(p), indicators.nans(0), indicators.nans(0)))[1:]


FEATURE_KINDS: Mapping[str, FeatureKind] = {
    k.name: k
    for k in (
        FeatureKind(
            name="ret", summary="simple return over k bars", params="k ≥ 1", example="[1, 5]",
            inputs=("close",), parse=_single(1, "[1, 5]"), columns=_one("ret"),
            warmup=_n, lookback=_n, compute=_ret,
        ),
        FeatureKind(
            name="logret", summary="log return over k bars", params="k ≥ 1", example="[1]",
            inputs=("close",), parse=_single(1, "[1]"), columns=_one("logret"),
            warmup=_n, lookback=_n, compute=_logret,
        ),
        FeatureKind(
            name="sma", summary="simple moving average of close", params="n ≥ 1",
            example="[10, 20]", inputs=("close",), parse=_single(1, "[10, 20]"),
            columns=_one("sma"), warmup=_n_minus_1, lookback=_n_minus_1, compute=_sma,
        ),
        FeatureKind(
            name="ema", summary="exponential moving average of close, SMA-seeded",
            params="n ≥ 1", example="[12, 26]", inputs=("close",), parse=_single(1, "[12, 26]"),
            columns=_one("ema"), warmup=_n_minus_1, lookback=_unbounded, compute=_ema,
            state=_one("ema"), resume=_ema_next,
        ),
        FeatureKind(
            name="rsi", summary="Wilder's relative strength index", params="n ≥ 1",
            example="[14]", inputs=("close",), parse=_single(1, "[14]"), columns=_one("rsi"),
            warmup=_n, lookback=_unbounded, compute=_rsi, state=_rsi_state, resume=_rsi_next,
        ),
        FeatureKind(
            name="macd", summary="MACD line, signal and histogram",
            params="[fast, slow, signal], fast < slow", example="[[12, 26, 9]]",
            inputs=("close",), parse=_parse_macd, columns=lambda p: _macd_names(p)[:3],
            warmup=lambda p: int(p[1]) + int(p[2]) - 2, lookback=_unbounded, compute=_macd,
            state=lambda p: _macd_names(p)[1:2] + _macd_names(p)[3:], resume=_macd_next,
        ),
        FeatureKind(
            name="atr", summary="Wilder's average true range", params="n ≥ 1", example="[14]",
            inputs=("high", "low", "close"), parse=_single(1, "[14]"), columns=_one("atr"),
            warmup=_n, lookback=_unbounded, compute=_atr, state=_one("atr"), resume=_atr_next,
        ),
        FeatureKind(
            name="bb", summary="Bollinger bands (population σ) and %B",
            params="n ≥ 2 or [n, k] (k defaults to 2)", example="[[20, 2]]", inputs=("close",),
            parse=_parse_bb, columns=_bb_columns, warmup=_n_minus_1, lookback=_n_minus_1,
            compute=_bb,
        ),
        FeatureKind(
            name="vol", summary="rolling σ of one-bar log returns, optionally annualised",
            params="n ≥ 2 or [n, periods per year]", example="[20, [20, 252]]",
            inputs=("close",), parse=_parse_vol, columns=lambda p: (_vol_name(p),), warmup=_n,
            lookback=_n, compute=_vol,
        ),
        FeatureKind(
            name="volz", summary="volume z-score (sample σ)", params="n ≥ 2", example="[20]",
            inputs=("volume",), parse=_single(2, "[20]"), columns=_one("volz"),
            warmup=_n_minus_1, lookback=_n_minus_1, compute=_volz,
        ),
    )
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Feature:
    """One feature instance: a catalogue ``kind`` with its parsed ``params`` (macd, (12, 26, 9))."""

    kind: str
    params: tuple[Param, ...]

    @property
    def label(self) -> str:
        """``kind_p1_p2…`` such as ``macd_12_26_9``; shown as the progress detail."""
        return "_".join([self.kind, *(_name_num(p) for p in self.params)])

    @property
    def columns(self) -> tuple[str, ...]:
        """The value columns, in output order."""
        return FEATURE_KINDS[self.kind].columns(self.params)

    @property
    def state_columns(self) -> tuple[str, ...]:
        """Columns holding the recursion state at a row (value columns or ``_state_*``)."""
        return FEATURE_KINDS[self.kind].state(self.params)

    @property
    def warmup(self) -> int:
        """Leading NaN rows in a full computation (of the slowest column)."""
        return FEATURE_KINDS[self.kind].warmup(self.params)

    @property
    def lookback(self) -> int | None:
        """Rows before a row that its value depends on; ``None`` for recursions (all of them)."""
        return FEATURE_KINDS[self.kind].lookback(self.params)

    @property
    def inputs(self) -> tuple[str, ...]:
        """The bar columns read."""
        return FEATURE_KINDS[self.kind].inputs

    def spec_value(self) -> Param | list[Param]:
        """The parameters as written in a spec: ``14`` or ``[12, 26, 9]``."""
        if len(self.params) == 1:
            return _plain(self.params[0])
        return [_plain(p) for p in self.params]


@dataclass(frozen=True, slots=True)
class FeatureSpec:
    """Which features to compute: catalogue order, parameters sorted, no duplicates.

    Build one with :func:`parse_feature_spec` (or :meth:`parse`); two specs selecting the same
    features compare equal however they were written.
    """

    features: tuple[Feature, ...]

    @classmethod
    def parse(cls, value: object) -> FeatureSpec:
        """Shim for :func:`parse_feature_spec`."""
        return parse_feature_spec(value)

    @property
    def columns(self) -> tuple[str, ...]:
        """Every value column, in output order."""
        return tuple(c for f in self.features for c in f.columns)

    @property
    def state_columns(self) -> tuple[str, ...]:
        """The ``_state_*`` columns a feature store keeps beside the values (value columns that
        double as state are not repeated)."""
        return tuple(
            c for f in self.features for c in f.state_columns if c.startswith(STATE_PREFIX)
        )

    @property
    def feature_count(self) -> int:
        """Number of value columns (the N of ``Feature i/N``)."""
        return len(self.columns)

    @property
    def warmup(self) -> int:
        """Leading rows with at least one NaN feature in a full computation."""
        return max((f.warmup for f in self.features), default=0)

    @property
    def inputs(self) -> tuple[str, ...]:
        """The bar columns the features read."""
        needed = {c for f in self.features for c in f.inputs}
        return tuple(c for c in ("open", "high", "low", "close", "volume") if c in needed)

    def to_dict(self) -> dict[str, list[Param | list[Param]]]:
        """The spec as plain JSON-able data; ``parse_feature_spec`` reads it back unchanged."""
        out: dict[str, list[Param | list[Param]]] = {}
        for f in self.features:
            out.setdefault(f.kind, []).append(f.spec_value())
        return out


def _kinds_list() -> str:
    return ", ".join(FEATURE_KINDS)


def parse_feature_spec(value: object) -> FeatureSpec:
    """A :class:`FeatureSpec` from a spec, a mapping, YAML/JSON text, a YAML file, or "default".

    A mapping goes from kind to a list of parameter values, e.g. ``{"sma": [10, 20], "macd":
    [[12, 26, 9]], "bb": [[20, 2]]}``; a single value may stand for a one-item list
    (``{"rsi": 14}``). ``None`` and ``"default"`` give :data:`DEFAULT_SPEC`. An unknown kind or
    a bad parameter raises ``InvalidRequest`` naming it and listing what is valid.
    """
    if isinstance(value, FeatureSpec):
        return value
    if value is None:
        return DEFAULT_SPEC
    if isinstance(value, Path):
        try:
            value = value.read_text(encoding="utf-8")
        except OSError as exc:
            raise InvalidRequest(
                f"feature spec file {str(value)!r} is not readable: {exc}"
            ) from exc
    if isinstance(value, str):
        if value.strip().lower() == "default":
            return DEFAULT_SPEC
        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise InvalidRequest(
                f"feature spec is not valid YAML ({exc}); write e.g. "
                "'{sma: [10, 20], rsi: [14], macd: [[12, 26, 9]]}' or 'default'"
            ) from exc
    if not isinstance(value, Mapping) or not value:
        raise InvalidRequest(
            f"feature spec {value!r} selects nothing; give a mapping from feature kind to "
            f"parameters, e.g. {{'sma': [10, 20], 'rsi': [14]}}, or 'default' (for a YAML "
            f"file pass a pathlib.Path). Kinds: {_kinds_list()}"
        )
    found: set[Feature] = set()
    for raw_kind, raw_values in value.items():
        kind = str(raw_kind).strip().lower()
        entry = FEATURE_KINDS.get(kind)
        if entry is None:
            raise InvalidRequest(f"unknown feature {raw_kind!r}: use one of {_kinds_list()}")
        values = raw_values if isinstance(raw_values, list | tuple) else [raw_values]
        if not values:
            raise InvalidRequest(
                f"feature {kind!r} has no parameters; give e.g. {kind!r}: {entry.example} "
                f"({entry.params}) or leave it out"
            )
        found.update(Feature(kind, entry.parse(kind, v)) for v in values)
    order = {k: i for i, k in enumerate(FEATURE_KINDS)}
    return FeatureSpec(tuple(sorted(found, key=lambda f: (order[f.kind], f.params))))


#: Used when no spec is given: returns, trend, momentum, volatility and volume features.
DEFAULT_SPEC: Final = parse_feature_spec(
    {
        "ret": [1],
        "logret": [1],
        "sma": [10, 20, 50],
        "ema": [12, 26],
        "rsi": [14],
        "macd": [[12, 26, 9]],
        "atr": [14],
        "bb": [[20, 2]],
        "vol": [20],
        "volz": [20],
    }
)


# -- computing -------------------------------------------------------------------------------------


def _input_arrays(bars: pd.DataFrame, spec: FeatureSpec) -> dict[str, F64]:
    if not isinstance(bars, pd.DataFrame):
        raise InvalidRequest(f"bars must be a DataFrame, got {type(bars).__name__}")
    index = bars.index
    if not isinstance(index, pd.DatetimeIndex) or index.tz is None:
        raise InvalidRequest(
            "bars need a tz-aware DatetimeIndex; localise it first, e.g. bars.tz_localize('UTC')"
        )
    if not index.is_monotonic_increasing or index.has_duplicates:
        raise InvalidRequest(
            "bars must be sorted by time without duplicate timestamps; use "
            "bars[~bars.index.duplicated(keep='last')].sort_index()"
        )
    missing = [c for c in spec.inputs if c not in bars.columns]
    if missing:
        raise InvalidRequest(
            f"bars lack column(s) {', '.join(missing)} needed by the features "
            f"({', '.join(f.label for f in spec.features if set(f.inputs) & set(missing))})"
        )
    arrays: dict[str, F64] = {}
    for col in spec.inputs:
        values = pd.to_numeric(bars[col], errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isfinite(values) if col != "volume" else np.isinf(values)
        if bad.any():
            first = int(np.argmax(bad))
            raise InvalidRequest(
                f"bars: {int(bad.sum()):,} {col} value(s) are missing or infinite (first at "
                f"{index[first]}); features never invent values — drop or repair those rows, "
                f"e.g. bars.dropna(subset=[{col!r}])"
            )
        arrays[col] = values
    return arrays


def compute_feature_rows(
    bars: pd.DataFrame,
    spec: object = "default",
    *,
    start: int = 0,
    state: Mapping[str, float] | None = None,
    span: Span | None = None,
) -> pd.DataFrame:
    """Rows ``start:`` of every value column and ``_state_*`` column — the incremental primitive.

    ``state`` holds the :attr:`FeatureSpec.state_columns` and recursive value columns at row
    ``start - 1`` (as a previous call returned them). Windowed features read ``lookback`` rows
    before ``start``; recursive ones continue from ``state`` — or, when it is missing or that
    row is still in their warm-up, recompute from row 0. Either way the result equals rows
    ``start:`` of a full computation exactly. Progress and cancellation as in
    :func:`compute_features`.
    """
    spec = parse_feature_spec(spec)
    data = _input_arrays(bars, spec)
    rows = len(bars)
    if not 0 <= start <= rows:
        raise InvalidRequest(f"start row {start} is outside the {rows:,} bars; use 0..{rows}")
    if span is not None and span.total is None:
        span.set_total(spec.feature_count)
    out: dict[str, F64] = {}
    for feature in spec.features:
        if span is not None:
            span.tracker.cancel_token.raise_if_cancelled()
        out.update(_compute_one(feature, data, start, state))
        if span is not None:
            span.advance(len(feature.columns), detail=feature.label)
    columns = [*spec.columns, *spec.state_columns]
    frame = pd.DataFrame({c: out[c] for c in columns}, index=bars.index[start:], columns=columns)
    frame.index.name = bars.index.name
    return frame


def _compute_one(
    feature: Feature, data: Mapping[str, F64], start: int, state: Mapping[str, float] | None
) -> _Out:
    kind = FEATURE_KINDS[feature.kind]
    lookback = feature.lookback
    if lookback is not None:
        lo = max(0, start - lookback)
        full = kind.compute(feature.params, {k: v[lo:] for k, v in data.items()})
        return {c: v[start - lo :] for c, v in full.items()}
    resume_state = _usable_state(feature, start, state)
    if resume_state is not None and kind.resume is not None:
        # One row of context (the previous close) plus the carried recursion state.
        return kind.resume(
            feature.params, {k: v[start - 1 :] for k, v in data.items()}, resume_state
        )
    if start > 0:
        logger.debug(
            "%s: no usable state before row %d; recomputing from row 0", feature.label, start
        )
    full = kind.compute(feature.params, data)
    return {c: v[start:] for c, v in full.items()}


def _usable_state(
    feature: Feature, start: int, state: Mapping[str, float] | None
) -> dict[str, float] | None:
    if state is None or start == 0 or start - 1 < feature.warmup:
        return None
    values: dict[str, float] = {}
    for col in feature.state_columns:
        value = state.get(col)
        if value is None or not math.isfinite(float(value)):
            return None
        values[col] = float(value)
    return values


def compute_features(
    bars: pd.DataFrame, spec: object = "default", span: Span | None = None
) -> pd.DataFrame:
    """The spec's feature columns for ``bars`` (one series), aligned to its index.

    ``bars`` needs a tz-aware, sorted, unique DatetimeIndex and the columns the features read
    (close; high and low for ATR; volume for volz), with finite prices (missing volume is
    allowed and makes volz NaN around it). ``spec`` is anything :func:`parse_feature_spec`
    takes. Warm-up rows are NaN. With a ``span``, its total is set to the column count if unset
    and it advances by each feature's columns (``Feature 4/15``, detail ``ema_26``); the
    tracker's cancel token is checked between features.
    """
    parsed = parse_feature_spec(spec)
    return compute_feature_rows(bars, parsed, span=span).loc[:, list(parsed.columns)]
