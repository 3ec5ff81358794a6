"""Feature catalogue and feature store: values against textbook formulas, warm-up, spec parsing,
exact incremental updates on a real-looking series, and the on-disk layout.

The reference implementations below are written from the textbook definitions with plain Python
loops and ``math`` — never with the code under test, and never with pandas' ewm/rolling — on a
30-bar series small enough to check by hand (the closes are Wilder's well-known RSI example data).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from pandas.testing import assert_frame_equal

import candleflow.features.store as feature_store_module
from candleflow.errors import Cancelled, InvalidRequest, NoData, StoreCorrupted
from candleflow.features.catalogue import (
    DEFAULT_SPEC,
    FEATURE_KINDS,
    MAX_WINDOW,
    compute_feature_rows,
    compute_features,
    parse_feature_spec,
)
from candleflow.features.store import HASH_COLUMN, FeatureStore, UpdateResult, update_features
from candleflow.progress import ListSink, ProgressTracker
from candleflow.sources.synthetic import SyntheticSource
from candleflow.store.bar_store import BarStore

NAN = float("nan")
Row = list[float]

CLOSES: Row = [
    44.34, 44.09, 44.15, 43.61, 44.33, 44.83, 45.10, 45.42, 45.84, 46.08,
    45.89, 46.03, 45.61, 46.28, 46.28, 46.00, 46.03, 46.41, 46.22, 45.64,
    46.21, 46.25, 45.71, 46.45, 45.78, 45.35, 44.03, 44.18, 44.22, 44.57,
]  # fmt: skip


def _bars30() -> pd.DataFrame:
    n = len(CLOSES)
    opens = [44.20, *CLOSES[:-1]]
    highs = [
        max(o, c) + 0.25 + 0.05 * (i % 3)
        for i, (o, c) in enumerate(zip(opens, CLOSES, strict=True))
    ]
    lows = [
        min(o, c) - 0.20 - 0.05 * (i % 4)
        for i, (o, c) in enumerate(zip(opens, CLOSES, strict=True))
    ]
    volumes = [1000.0 + 37.0 * ((i * 7) % 11) for i in range(n)]
    index = pd.date_range("2024-03-04", periods=n, freq="1D", tz="UTC", name="timestamp")
    return pd.DataFrame(
        {"open": opens, "high": highs, "low": lows, "close": CLOSES, "volume": volumes},
        index=index,
    )


BARS = _bars30()
HIGHS: Row = BARS["high"].tolist()
LOWS: Row = BARS["low"].tolist()
VOLUMES: Row = BARS["volume"].tolist()

SPEC = {
    "ret": [1, 3],
    "logret": [1, 3],
    "sma": [5, 10],
    "ema": [5, 10],
    "rsi": [5, 14],
    "macd": [[3, 6, 4], [12, 26, 9]],
    "atr": [5, 14],
    "bb": [[5, 2], [10, 2.5]],
    "vol": [5, [5, 252]],
    "volz": [5],
}


# -- textbook references (plain loops) ------------------------------------------------------------


def ref_sma(x: Row, n: int) -> Row:
    return [NAN if t < n - 1 else sum(x[t - n + 1 : t + 1]) / n for t in range(len(x))]


def ref_ema(x: Row, n: int) -> Row:
    """α = 2/(n+1); the first value (row n-1) is the SMA of the first n inputs."""
    alpha = 2.0 / (n + 1)
    out = [NAN] * len(x)
    if len(x) < n:
        return out
    out[n - 1] = sum(x[:n]) / n
    for t in range(n, len(x)):
        out[t] = alpha * x[t] + (1 - alpha) * out[t - 1]
    return out


def ref_wilder(x: Row, n: int) -> Row:
    """Wilder's smoothing of x[1:]: first value (row n) = mean(x[1..n]), then ((n-1)a + x)/n."""
    out = [NAN] * len(x)
    if len(x) <= n:
        return out
    out[n] = sum(x[1 : n + 1]) / n
    for t in range(n + 1, len(x)):
        out[t] = ((n - 1) * out[t - 1] + x[t]) / n
    return out


def ref_rsi(c: Row, n: int) -> Row:
    gains = [NAN] + [max(c[t] - c[t - 1], 0.0) for t in range(1, len(c))]
    losses = [NAN] + [max(c[t - 1] - c[t], 0.0) for t in range(1, len(c))]
    avg_gain, avg_loss = ref_wilder(gains, n), ref_wilder(losses, n)
    out = []
    for ag, al in zip(avg_gain, avg_loss, strict=True):
        if math.isnan(ag):
            out.append(NAN)
        elif al == 0:
            out.append(100.0 if ag > 0 else NAN)
        else:
            out.append(100.0 - 100.0 / (1.0 + ag / al))
    return out


def ref_atr(h: Row, lo: Row, c: Row, n: int) -> Row:
    tr = [NAN] + [
        max(h[t] - lo[t], abs(h[t] - c[t - 1]), abs(lo[t] - c[t - 1])) for t in range(1, len(c))
    ]
    return ref_wilder(tr, n)


def ref_macd(c: Row, fast: int, slow: int, sig: int) -> tuple[Row, Row, Row]:
    line = [a - b for a, b in zip(ref_ema(c, fast), ref_ema(c, slow), strict=True)]
    signal = [NAN] * len(c)
    if len(c) >= slow:
        signal[slow - 1 :] = ref_ema(line[slow - 1 :], sig)
    return line, signal, [a - b for a, b in zip(line, signal, strict=True)]


def ref_pstd(w: Row) -> float:
    m = sum(w) / len(w)
    return math.sqrt(sum((v - m) ** 2 for v in w) / len(w))


def ref_sstd(w: Row) -> float:
    m = sum(w) / len(w)
    return math.sqrt(sum((v - m) ** 2 for v in w) / (len(w) - 1))


def ref_bb(c: Row, n: int, k: float) -> tuple[Row, Row, Row, Row]:
    mid, upper, lower, pctb = [], [], [], []
    for t in range(len(c)):
        if t < n - 1:
            for col in (mid, upper, lower, pctb):
                col.append(NAN)
            continue
        w = c[t - n + 1 : t + 1]
        m, sd = sum(w) / n, ref_pstd(w)
        mid.append(m)
        upper.append(m + k * sd)
        lower.append(m - k * sd)
        pctb.append((c[t] - (m - k * sd)) / (2 * k * sd))
    return mid, upper, lower, pctb


def ref_ret(c: Row, k: int) -> Row:
    return [NAN if t < k else c[t] / c[t - k] - 1 for t in range(len(c))]


def ref_logret(c: Row, k: int) -> Row:
    return [NAN if t < k else math.log(c[t] / c[t - k]) for t in range(len(c))]


def ref_vol(c: Row, n: int, periods: float | None = None) -> Row:
    r = [NAN] + [math.log(c[t] / c[t - 1]) for t in range(1, len(c))]
    scale = math.sqrt(periods) if periods else 1.0
    return [NAN if t < n else ref_sstd(r[t - n + 1 : t + 1]) * scale for t in range(len(c))]


def ref_volz(v: Row, n: int) -> Row:
    out = []
    for t in range(len(v)):
        if t < n - 1:
            out.append(NAN)
            continue
        w = v[t - n + 1 : t + 1]
        out.append((v[t] - sum(w) / n) / ref_sstd(w))
    return out


def references() -> dict[str, Row]:
    c = CLOSES
    refs: dict[str, Row] = {}
    for k in (1, 3):
        refs[f"ret_{k}"] = ref_ret(c, k)
        refs[f"logret_{k}"] = ref_logret(c, k)
    for n in (5, 10):
        refs[f"sma_{n}"] = ref_sma(c, n)
        refs[f"ema_{n}"] = ref_ema(c, n)
    for n in (5, 14):
        refs[f"rsi_{n}"] = ref_rsi(c, n)
        refs[f"atr_{n}"] = ref_atr(HIGHS, LOWS, c, n)
    for f, s, g in ((3, 6, 4), (12, 26, 9)):
        tag = f"{f}_{s}_{g}"
        line, signal, hist = ref_macd(c, f, s, g)
        refs[f"macd_{tag}"], refs[f"macd_signal_{tag}"], refs[f"macd_hist_{tag}"] = (
            line,
            signal,
            hist,
        )
    for n, k, tag in ((5, 2.0, "5_2"), (10, 2.5, "10_2p5")):
        mid, upper, lower, pctb = ref_bb(c, n, k)
        refs[f"bb_mid_{tag}"], refs[f"bb_upper_{tag}"] = mid, upper
        refs[f"bb_lower_{tag}"], refs[f"bb_pctb_{tag}"] = lower, pctb
    refs["vol_5"] = ref_vol(c, 5)
    refs["vol_5_ann252"] = ref_vol(c, 5, 252)
    refs["volz_5"] = ref_volz(VOLUMES, 5)
    return refs


# -- values ---------------------------------------------------------------------------------------


def test_every_column_matches_its_textbook_reference() -> None:
    got = compute_features(BARS, SPEC)
    refs = references()
    assert sorted(got.columns) == sorted(refs)
    assert got.index.equals(BARS.index)
    for col, ref in refs.items():
        expected = np.array(ref)
        actual = got[col].to_numpy()
        assert np.array_equal(np.isnan(actual), np.isnan(expected)), col
        np.testing.assert_allclose(actual, expected, rtol=1e-12, atol=1e-12, err_msg=col)


def test_hand_checked_values() -> None:
    got = compute_features(BARS, {"sma": 5, "ret": 1, "ema": 5, "rsi": 5})
    # sma_5 at row 4: (44.34 + 44.09 + 44.15 + 43.61 + 44.33) / 5
    assert got["sma_5"].iloc[4] == pytest.approx(220.52 / 5, abs=1e-12)
    assert got["ret_1"].iloc[1] == pytest.approx(44.09 / 44.34 - 1, abs=1e-15)
    # ema_5 row 5: seed 44.104, then α = 1/3: 44.83/3 + 44.104·2/3
    assert got["ema_5"].iloc[5] == pytest.approx(44.83 / 3 + 44.104 * 2 / 3, abs=1e-12)
    # rsi_5 at row 5: changes -0.25, +0.06, -0.54, +0.72, +0.50 → AG = 1.28/5, AL = 0.79/5
    assert got["rsi_5"].iloc[5] == pytest.approx(100 - 100 / (1 + 1.28 / 0.79), abs=1e-9)


EXPECTED_FIRST_VALUE = {
    "ret_1": 1, "ret_3": 3, "logret_1": 1, "logret_3": 3, "sma_5": 4, "sma_10": 9,
    "ema_5": 4, "ema_10": 9, "rsi_5": 5, "rsi_14": 14, "atr_5": 5, "atr_14": 14,
    "macd_3_6_4": 5, "macd_signal_3_6_4": 8, "macd_hist_3_6_4": 8,
    "bb_mid_5_2": 4, "bb_upper_5_2": 4, "bb_lower_5_2": 4, "bb_pctb_5_2": 4,
    "bb_mid_10_2p5": 9, "bb_upper_10_2p5": 9, "bb_lower_10_2p5": 9, "bb_pctb_10_2p5": 9,
    "vol_5": 5, "vol_5_ann252": 5, "volz_5": 4,
}  # fmt: skip


def test_warm_up_rows_are_nan_exactly_and_never_filled() -> None:
    got = compute_features(BARS, SPEC)
    for col, first in EXPECTED_FIRST_VALUE.items():
        values = got[col].to_numpy()
        assert np.isnan(values[:first]).all(), col
        assert np.isfinite(values[first:]).all(), col
    # MACD(12, 26, 9)'s line starts at row 25; its signal would need 34 rows: all NaN here.
    assert np.isnan(got["macd_12_26_9"].to_numpy()[:25]).all()
    assert np.isfinite(got["macd_12_26_9"].to_numpy()[25:]).all()
    assert got["macd_signal_12_26_9"].isna().all()
    assert got["macd_hist_12_26_9"].isna().all()


def test_declared_warmup_and_lookback_are_honest() -> None:
    spec = parse_feature_spec(SPEC)
    full = compute_features(BARS, spec)
    for feature in spec.features:
        first = min(int(np.argmax(np.isfinite(full[c].to_numpy()))) for c in feature.columns)
        if feature.warmup < len(BARS):
            slowest = max(int(np.argmax(np.isfinite(full[c].to_numpy()))) for c in feature.columns)
            assert slowest == feature.warmup, feature.label
        assert first <= feature.warmup
    # Changing bar 15 changes windowed features only in rows 15 .. 15 + lookback.
    bumped = BARS.copy()
    for col in ("high", "close"):
        bumped.iloc[15, bumped.columns.get_loc(col)] += 0.5
    bumped.iloc[15, bumped.columns.get_loc("volume")] += 100
    after = compute_features(bumped, spec)
    for feature in spec.features:
        if feature.lookback is None:
            continue
        for col in feature.columns:
            changed = ~np.isclose(full[col], after[col], rtol=0, atol=0, equal_nan=True)
            rows = np.flatnonzero(changed)
            assert rows.min() >= 15 and rows.max() <= 15 + feature.lookback, col


def test_zero_width_band_and_flat_volume_give_nan_not_invented_values() -> None:
    flat = BARS.copy()
    flat["close"] = 50.0
    flat["open"] = 50.0
    flat["volume"] = 1000.0
    got = compute_features(flat, {"bb": [[5, 2]], "volz": [5], "rsi": [5]})
    assert (got["bb_mid_5_2"].iloc[4:] == 50.0).all()
    assert got["bb_pctb_5_2"].isna().all()
    assert got["volz_5"].isna().all()
    assert got["rsi_5"].isna().all()  # no gains and no losses: RS = 0/0 is undefined


def test_missing_volume_makes_only_volume_features_nan() -> None:
    bars = BARS.copy()
    bars.iloc[12, bars.columns.get_loc("volume")] = np.nan
    got = compute_features(bars, {"volz": [5], "sma": [5]})
    assert got["volz_5"].iloc[12:17].isna().all()
    assert got["volz_5"].iloc[17:].notna().all()
    assert got["sma_5"].iloc[4:].notna().all()


@pytest.mark.parametrize("start", range(len(BARS) + 1))
def test_rows_from_any_start_with_carried_state_equal_the_full_computation(start: int) -> None:
    full = compute_feature_rows(BARS, SPEC)
    state = full.iloc[start - 1].to_dict() if start > 0 else None
    part = compute_feature_rows(BARS, SPEC, start=start, state=state)
    assert_frame_equal(part, full.iloc[start:], check_exact=True)


def test_progress_counts_feature_columns_and_names_each_feature() -> None:
    sink = ListSink()
    tracker = ProgressTracker("features AAPL 1d", [sink], min_interval=0)
    spec = parse_feature_spec(SPEC)
    with tracker.stage("features", unit="Feature") as span:
        compute_features(BARS, spec, span=span)
        assert span.total == spec.feature_count == len(references()) == 29
        assert span.done == spec.feature_count
    events = [e for e in sink.events if e.stage == "features" and e.items_done]
    assert [e.items_total for e in events] == [spec.feature_count] * len(events)
    done = [e.items_done for e in events]
    assert done == sorted(done) and done[-1] == spec.feature_count
    assert {e.detail for e in events} >= {"macd_3_6_4", "bb_10_2p5", "vol_5_252"}


def test_a_cancelled_tracker_stops_between_features() -> None:
    tracker = ProgressTracker("features", min_interval=0)
    tracker.cancel_token.cancel("user asked")
    with pytest.raises(Cancelled, match="user asked"), tracker.stage("features") as span:
        compute_features(BARS, SPEC, span=span)


# -- spec parsing ---------------------------------------------------------------------------------


def test_default_spec_and_its_stable_column_names() -> None:
    assert parse_feature_spec("default") is DEFAULT_SPEC
    assert parse_feature_spec(None) is DEFAULT_SPEC
    assert DEFAULT_SPEC.columns == (
        "ret_1", "logret_1", "sma_10", "sma_20", "sma_50", "ema_12", "ema_26", "rsi_14",
        "macd_12_26_9", "macd_signal_12_26_9", "macd_hist_12_26_9", "atr_14",
        "bb_mid_20_2", "bb_upper_20_2", "bb_lower_20_2", "bb_pctb_20_2", "vol_20", "volz_20",
    )  # fmt: skip
    assert DEFAULT_SPEC.feature_count == 18


def test_specs_from_yaml_json_dict_and_file_agree(tmp_path: Path) -> None:
    text = "sma: [20, 10, 20]\nmacd: [[12, 26, 9]]\nbb: [20]\nvol: [[20, 252]]\nRSI: 14\n"
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    from_yaml = parse_feature_spec(text)
    as_dict = {
        "rsi": [14],
        "sma": [10, 20],
        "macd": [[12, 26, 9]],
        "bb": [[20, 2]],
        "vol": [[20, 252]],
    }
    assert from_yaml == parse_feature_spec(as_dict)
    assert from_yaml == parse_feature_spec(json.dumps(as_dict))
    assert from_yaml == parse_feature_spec(path)
    assert parse_feature_spec(from_yaml.to_dict()) == from_yaml
    assert from_yaml.columns == (
        "sma_10", "sma_20", "rsi_14", "macd_12_26_9", "macd_signal_12_26_9",
        "macd_hist_12_26_9", "bb_mid_20_2", "bb_upper_20_2", "bb_lower_20_2", "bb_pctb_20_2",
        "vol_20_ann252",
    )  # fmt: skip


def test_unknown_feature_names_it_and_lists_the_valid_ones() -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_feature_spec({"sma": [10], "stoch": [14]})
    message = str(info.value)
    assert "'stoch'" in message
    for kind in FEATURE_KINDS:
        assert kind in message


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ({"sma": [0]}, "window 0"),
        ({"sma": [-5]}, "window -5"),
        ({"ema": [2.5]}, "window 2.5"),
        ({"rsi": ["ten"]}, "window 'ten'"),
        ({"rsi": [True]}, "window True"),
        ({"atr": [MAX_WINDOW + 1]}, f"window {MAX_WINDOW + 1}"),
        ({"volz": [1]}, "window 1"),
        ({"macd": [[26, 12, 9]]}, "fast window 26 must be shorter"),
        ({"macd": [12, 26, 9]}, "expected 3 values"),
        ({"bb": [[20, -2]]}, "band width k -2"),
        ({"bb": [[20, 2, 1]]}, "expected 1 value or 2 values"),
        ({"vol": [[20, 0]]}, "periods per year 0"),
        ({"sma": []}, "'sma' has no parameters"),
        ({}, "selects nothing"),
        ("[1, 2]", "selects nothing"),
        ("sma: [10", "not valid YAML"),
    ],
)
def test_bad_specs_say_what_and_how_to_fix(spec: object, fragment: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_feature_spec(spec)
    assert fragment in str(info.value)
    assert "e.g." in str(info.value) or "use one of" in str(info.value)


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda b: b.tz_localize(None), "tz-aware"),
        (lambda b: b.iloc[::-1], "sorted"),
        (lambda b: b.drop(columns=["high"]), "high"),
        (lambda b: b.assign(close=b["close"].where(b.index != b.index[7])), "close value"),
    ],
)
def test_bad_bars_are_rejected(
    mutate: Callable[[pd.DataFrame], pd.DataFrame], fragment: str
) -> None:
    with pytest.raises(InvalidRequest, match=fragment):
        compute_features(mutate(BARS), SPEC)


# -- feature store --------------------------------------------------------------------------------

SOURCE, SYMBOL, TF = "synthetic", "AAPL", "1h"


@pytest.fixture(scope="module")
def year_and_week() -> tuple[pd.DataFrame, pd.DataFrame]:
    synthetic = SyntheticSource(seed=1)
    year = synthetic.bars(SYMBOL, TF, "2024-01-01", "2025-01-01")
    week = synthetic.bars(SYMBOL, TF, "2025-01-01", "2025-01-08")
    return year, week


def _stores(tmp_path: Path) -> tuple[BarStore, FeatureStore]:
    bars = BarStore(tmp_path / "store")
    return bars, FeatureStore(bars)


def _assert_matches_full(bars: BarStore, features: FeatureStore, spec: object = "default") -> None:
    expected = compute_features(bars.read(SOURCE, SYMBOL, TF), spec)
    stored = features.read(SOURCE, SYMBOL, TF)
    assert_frame_equal(stored, expected, check_exact=True, check_freq=False)
    # Recomputing everything from scratch (state columns included) gives the same files' worth.
    with_state = compute_feature_rows(bars.read(SOURCE, SYMBOL, TF), spec)
    assert_frame_equal(
        features.read(SOURCE, SYMBOL, TF, internal=True).drop(columns=[HASH_COLUMN]),
        with_state,
        check_exact=True,
        check_freq=False,
    )


def test_tail_update_recomputes_only_new_rows_and_equals_full(
    tmp_path: Path, year_and_week: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    year, week = year_and_week
    bars, features = _stores(tmp_path)
    bars.write(SOURCE, SYMBOL, TF, year)
    first = update_features(bars, features, SOURCE, SYMBOL, TF)
    assert (first.mode, first.rows, first.rows_recomputed) == ("full", len(year), len(year))
    assert first.feature_count == DEFAULT_SPEC.feature_count

    bars.write(SOURCE, SYMBOL, TF, week)
    sink = ListSink()
    tracker = ProgressTracker("features", [sink], min_interval=0)
    with tracker.stage("features", unit="Feature") as span:
        tail = update_features(bars, features, SOURCE, SYMBOL, TF, span=span)
    assert tail.mode == "incremental"
    assert tail.rows_recomputed == len(week) == tail.rows - len(year)
    assert tail.first_recomputed == week.index[0]
    assert [Path(p).name for p in tail.partitions] == ["year=2025.parquet"]
    assert sink.events[-1].items_done == DEFAULT_SPEC.feature_count
    _assert_matches_full(bars, features)

    again = update_features(bars, features, SOURCE, SYMBOL, TF)
    assert (again.mode, again.rows_recomputed, again.partitions) == ("unchanged", 0, ())

    meta = bars.read_meta(SOURCE, SYMBOL, TF)
    assert meta["feature_count"] == 18
    assert parse_feature_spec(meta["feature_spec"]) == DEFAULT_SPEC
    assert pd.Timestamp(str(meta["features_updated_at"])).tzinfo is not None


def test_a_revised_last_bar_is_recomputed_with_the_new_ones(
    tmp_path: Path, year_and_week: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    year, week = year_and_week
    bars, features = _stores(tmp_path)
    bars.write(SOURCE, SYMBOL, TF, year.iloc[:-1])
    update_features(bars, features, SOURCE, SYMBOL, TF)
    # The tail load re-fetches the last stored bar (now complete, so different) plus the week.
    last = year.iloc[-2:-1].copy()
    last["close"] += 0.01
    last["high"] = last[["high", "close"]].max(axis=1)
    bars.write(SOURCE, SYMBOL, TF, pd.concat([last, year.iloc[-1:], week]))
    result = update_features(bars, features, SOURCE, SYMBOL, TF)
    assert result.mode == "incremental"
    assert result.rows_recomputed == 1 + 1 + len(week)
    assert result.first_recomputed == last.index[0]
    assert [Path(p).name for p in result.partitions] == ["year=2024.parquet", "year=2025.parquet"]
    _assert_matches_full(bars, features)


def test_a_filled_interior_gap_recomputes_from_the_gap(
    tmp_path: Path, year_and_week: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    year, _ = year_and_week
    bars, features = _stores(tmp_path)
    gap = year.index[1000:1010]
    bars.write(SOURCE, SYMBOL, TF, year.drop(gap))
    update_features(bars, features, SOURCE, SYMBOL, TF)
    bars.write(SOURCE, SYMBOL, TF, year.loc[gap])
    result = update_features(bars, features, SOURCE, SYMBOL, TF)
    assert result.mode == "incremental"
    assert result.rows_recomputed == len(year) - 1000
    _assert_matches_full(bars, features)


def test_a_changed_spec_recomputes_everything_and_drops_old_columns(
    tmp_path: Path, year_and_week: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    year, _ = year_and_week
    bars, features = _stores(tmp_path)
    bars.write(SOURCE, SYMBOL, TF, year)
    update_features(bars, features, SOURCE, SYMBOL, TF)
    result = update_features(bars, features, SOURCE, SYMBOL, TF, {"rsi": [7], "sma": [5]})
    assert (result.mode, result.reason, result.rows_recomputed) == (
        "full",
        "feature spec changed",
        len(year),
    )
    assert list(features.read(SOURCE, SYMBOL, TF).columns) == ["sma_5", "rsi_7"]
    assert bars.read_meta(SOURCE, SYMBOL, TF)["feature_count"] == 2
    _assert_matches_full(bars, features, {"rsi": [7], "sma": [5]})


def test_a_writer_killed_between_partitions_is_repaired_by_the_next_update(
    tmp_path: Path,
    year_and_week: tuple[pd.DataFrame, pd.DataFrame],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    year, week = year_and_week
    bars, features = _stores(tmp_path)
    bars.write(SOURCE, SYMBOL, TF, pd.concat([year, week]))
    update_features(bars, features, SOURCE, SYMBOL, TF)
    # Revising December's last bars changes every later row of the recursive features, in the
    # 2025 partition too, though no 2025 bar changed.
    revised = year.iloc[-2:].copy()
    revised["close"] = revised["open"]  # still inside high/low
    bars.write(SOURCE, SYMBOL, TF, revised)

    real_write = feature_store_module.atomic_write
    calls: list[str] = []

    def dies_on_second_partition(path: Path, write: Callable[..., object]) -> None:
        calls.append(path.name)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        real_write(path, write)

    monkeypatch.setattr(feature_store_module, "atomic_write", dies_on_second_partition)
    with pytest.raises(KeyboardInterrupt):
        update_features(bars, features, SOURCE, SYMBOL, TF)
    # Newest first: 2025 was replaced, 2024 still holds the old rows and their old fingerprints.
    assert calls == ["year=2025.parquet", "year=2024.parquet"]
    monkeypatch.setattr(feature_store_module, "atomic_write", real_write)

    result = update_features(bars, features, SOURCE, SYMBOL, TF)
    assert result.rows_recomputed == 2 + len(week)
    _assert_matches_full(bars, features)


@pytest.mark.parametrize(
    ("timeframe", "start", "end"),
    [("1h", "2023-12-20", "2024-01-10"), ("5m", "2024-02-28", "2024-03-02")],
)
def test_feature_files_mirror_the_bar_partitions_and_read_with_pandas(
    tmp_path: Path, timeframe: str, start: str, end: str
) -> None:
    bars, features = _stores(tmp_path)
    frame = SyntheticSource(seed=1).bars(SYMBOL, timeframe, start, end)
    bars.write(SOURCE, SYMBOL, timeframe, frame)
    update_features(bars, features, SOURCE, SYMBOL, timeframe, {"sma": [3], "rsi": [3]})
    bar_dir = bars.series_dir(SOURCE, SYMBOL, timeframe)
    feature_dir = features.series_dir(SOURCE, SYMBOL, timeframe)
    assert feature_dir == (
        tmp_path
        / "store"
        / "features"
        / f"source={SOURCE}"
        / f"symbol={SYMBOL}"
        / f"timeframe={timeframe}"
    )
    bar_files = bars.partitions(SOURCE, SYMBOL, timeframe)
    feature_files = features.partitions(SOURCE, SYMBOL, timeframe)
    bar_parts = [p.relative_to(bar_dir) for p in bar_files]
    feature_parts = [p.relative_to(feature_dir) for p in feature_files]
    assert feature_parts == bar_parts and len(bar_parts) == 2
    assert not [p for p in feature_dir.rglob("*") if p.name.endswith(".tmp")]
    for bar_file, feature_file in zip(bar_files, feature_files, strict=True):
        plain = pd.read_parquet(feature_file)
        assert list(plain.columns)[:3] == ["timestamp", "sma_3", "rsi_3"]
        assert plain["timestamp"].equals(pd.read_parquet(bar_file)["timestamp"])
        assert pq.read_schema(feature_file).field("sma_3").type == "double"


def test_no_bars_means_no_data_and_a_foreign_feature_store_is_refused(tmp_path: Path) -> None:
    bars, features = _stores(tmp_path)
    with pytest.raises(NoData, match="no bars stored"):
        update_features(bars, features, SOURCE, SYMBOL, TF)
    with pytest.raises(InvalidRequest, match="not beside"):
        update_features(bars, FeatureStore(tmp_path / "other"), SOURCE, SYMBOL, TF)
    assert features.read(SOURCE, SYMBOL, TF).empty


def test_cancelled_update_writes_nothing(
    tmp_path: Path, year_and_week: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    year, _ = year_and_week
    bars, features = _stores(tmp_path)
    bars.write(SOURCE, SYMBOL, TF, year)
    tracker = ProgressTracker("features", min_interval=0)
    tracker.cancel_token.cancel()
    with pytest.raises(Cancelled), tracker.stage("features") as span:
        update_features(bars, features, SOURCE, SYMBOL, TF, span=span)
    assert features.partitions(SOURCE, SYMBOL, TF) == []
    assert "feature_count" not in bars.read_meta(SOURCE, SYMBOL, TF)


def test_update_result_is_json_ready(
    tmp_path: Path, year_and_week: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    bars, features = _stores(tmp_path)
    bars.write(SOURCE, SYMBOL, TF, year_and_week[0].iloc[:100])
    result = update_features(bars, features, SOURCE, SYMBOL, TF, {"ema": [5]})
    assert isinstance(result, UpdateResult)
    data = json.loads(json.dumps(result.to_dict()))
    assert data["rows"] == 100 and data["feature_count"] == 1 and data["mode"] == "full"


def test_recursions_continue_from_the_carried_state_instead_of_rerunning_history(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import candleflow.features.indicators as indicators_module

    real = indicators_module._recurse
    lengths: list[int] = []

    def spy(first: float, x: np.ndarray, alpha: float) -> np.ndarray:
        lengths.append(len(x))
        return real(first, x, alpha)

    monkeypatch.setattr(indicators_module, "_recurse", spy)
    full = compute_feature_rows(BARS, {"ema": [5], "rsi": [5], "atr": [5], "macd": [[3, 6, 4]]})
    assert max(lengths) > 20
    lengths.clear()
    compute_feature_rows(
        BARS, {"ema": [5], "rsi": [5], "atr": [5], "macd": [[3, 6, 4]]},
        start=len(BARS) - 3, state=full.iloc[-4].to_dict(),
    )  # fmt: skip
    assert lengths and max(lengths) == 3


def test_an_unreadable_feature_file_raises_store_corrupted_naming_it(
    tmp_path: Path, year_and_week: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    bars, features = _stores(tmp_path)
    bars.write(SOURCE, SYMBOL, TF, year_and_week[0])
    update_features(bars, features, SOURCE, SYMBOL, TF)
    (path,) = features.partitions(SOURCE, SYMBOL, TF)
    path.write_bytes(b"not parquet")
    with pytest.raises(StoreCorrupted, match=re.escape(str(path))):
        update_features(bars, features, SOURCE, SYMBOL, TF)
    with pytest.raises(StoreCorrupted, match=re.escape(str(path))):
        features.read(SOURCE, SYMBOL, TF)
