"""The ``features`` flow: compute a series' feature columns beside its bars (DESIGN §6).

It reads the stored bars of one symbol × timeframe, computes the spec's features (``"default"``,
a mapping, YAML text or a YAML file path) and writes them as Parquet under
``{store}/features/{source}/{SYMBOL}/{timeframe}/``, recomputing only the rows whose windows
changed when features are already stored. Progress goes to the run's progress artifact as
"Feature i/N: <column>"; a cancel stops between features without writing anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow
from prefect.client.schemas.objects import State

from candleflow.features.catalogue import parse_feature_spec
from candleflow.features.store import UpdateResult
from candleflow.models import parse_symbol
from candleflow.store.bar_store import validate_source_name
from candleflow.timeframes import parse_timeframe
from tasks.cancel import cancel_cause, cancelled_state
from tasks.features import update_series_features
from tasks.progress import artifact_key, open_run, publish_summary
from tasks.results import IN_MEMORY_RESULTS

__all__ = ["features", "resolve_spec"]


def resolve_spec(spec: object) -> object:
    """A spec parameter as the core takes it: a ``.yaml``/``.yml`` path string becomes a Path."""
    if isinstance(spec, str) and spec.strip().lower().endswith((".yaml", ".yml")):
        return Path(spec.strip()).expanduser()
    return spec


@flow(
    name="features",
    flow_run_name="features {symbol} {timeframe}",
    log_prints=False,
    **IN_MEMORY_RESULTS,
)
def features(
    symbol: str,
    timeframe: str = "1d",
    source: str = "synthetic",
    store: str = "data",
    spec: str | dict[str, Any] = "default",
) -> dict[str, Any] | State[Any]:
    """Update the stored features of ``symbol`` ``timeframe`` bars from ``source`` in ``store``.

    The ``Args`` below are what the Prefect UI shows beside each field of the run form.

    Args:
        symbol: Ticker whose stored bars to use, e.g. `AAPL` (case-insensitive); load its
            bars first with the load-data deployment.
        timeframe: Bar length of the series: `1m`, `2m`, `3m`, `5m`, `10m`, `15m`, `20m`,
            `30m`, `1h`, `2h`, `3h`, `4h`, `8h` or `1d`. Default `1d`.
        source: Source the bars were loaded from (the store keeps each source apart):
            `synthetic` (default), `files` or `ib`.
        store: Folder of the Parquet bar store; a relative path is taken from the worker's
            working directory (the checkout). Features are written beside the bars, under
            `features/`. Default `data`.
        spec: Features to compute: `default` (the default: returns, log returns, SMA
            10/20/50, EMA 12/26, RSI 14, MACD 12/26/9, ATR 14, Bollinger 20/2, volatility 20,
            volume z-score 20),
            a JSON object from kind to parameters such as `{"sma": [10, 50], "rsi": 14}`,
            YAML text of the same, or the path of a `.yaml`/`.yml` file holding it.

    Returns:
        What was done (mode full/incremental/unchanged, rows recomputed, feature count), or a
        Cancelled state (nothing written) when cancelled.
    """
    sym = parse_symbol(symbol)
    tf = parse_timeframe(timeframe)
    validate_source_name(source)
    parsed = parse_feature_spec(resolve_spec(spec))
    label = f"{sym} {tf.name}"
    key = artifact_key("features", sym, tf.name)
    with open_run(f"features {label}", [("compute_features", 1)], key=key) as run:
        state = update_series_features(store, source, sym, tf.name, parsed.to_dict(),
                                       return_state=True)  # fmt: skip
        if state.is_cancelled():
            return cancelled_state(f"features {label} {cancel_cause(run)}: nothing written")
        result = state.result()
        if not isinstance(result, UpdateResult):
            raise TypeError(f"update_series_features returned {type(result).__name__}")
        run.tracker.complete()
        summary = result.to_dict()
        if run.handle is not None:
            run.handle.summary = summary
    publish_summary(
        f"{key}-summary",
        f"features {label}: {result.mode}",
        [
            ("mode", f"{result.mode} ({result.reason})"),
            ("features", result.feature_count),
            ("rows", f"{result.rows:,}"),
            ("rows recomputed", f"{result.rows_recomputed:,}"),
            ("partitions written", len(result.partitions)),
        ],
    )
    return summary
