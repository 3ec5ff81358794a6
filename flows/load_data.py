"""The ``load_data`` flow: one symbol × timeframe through the eight loading stages (DESIGN §2).

Read it as the pipeline: validate the symbol, find the head timestamp, read the store, analyse the
gaps, plan segments, fetch them, merge, save. Fetched segments are written to the store as they
arrive (``flush``), so a crash or a cancel loses at most the segment in flight and a rerun resumes
from the store. A segment that fails after its retries does not stop the others: the run ends
Completed with a warning listing them — or Failed when nothing could be fetched. A cancel (the
Prefect UI/API, ``prefect flow-run cancel``, SIGTERM from a worker, Ctrl+C in the CLI) stops at
the next segment boundary, saves what was fetched, and ends the run Cancelled.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Final

import pandas as pd
from prefect import flow, get_run_logger
from prefect.client.schemas.objects import State

from candleflow.errors import CandleflowError, InvalidRequest
from candleflow.loading.gaps import analyze_gaps as final_gaps
from candleflow.loading.pipeline import (
    FetchResult,
    LoadRequest,
    LoadSummary,
    read_completed,
    resolve_alignment,
    stage_plan,
)
from candleflow.loading.pipeline import save_bars as write_bars
from candleflow.models import FetchStats, GapClass, LoadMode
from candleflow.sources.base import Source
from candleflow.sources.registry import (
    DEFAULT_CLIENT_ID,
    DEFAULT_IB_HOST,
    DEFAULT_IB_PORT,
    make_source,
)
from candleflow.store.bar_store import BarStore
from candleflow.store.frames import drop_invalid_bars, empty_bars
from tasks.cancel import cancel_cause, cancelled_state
from tasks.load import (
    analyze_gaps,
    check_head_timestamp,
    fetch_segments,
    load_local,
    merge_bars,
    plan_segments,
    save_bars,
    validate_symbol,
)
from tasks.pacing import ib_request_gate
from tasks.progress import artifact_key, open_run, publish_summary

__all__ = ["StoreFlush", "load_data"]


class StoreFlush:
    """The fetch stage's ``flush``: writes each batch of fetched bars to the store at once."""

    def __init__(self, store: BarStore, source_name: str, request: LoadRequest) -> None:
        self.store, self.source_name, self.request = store, source_name, request
        self.frames: list[pd.DataFrame] = []
        self.rows_added = 0

    def __call__(self, frame: pd.DataFrame) -> None:
        clean = drop_invalid_bars(frame)
        result = write_bars(self.store, self.source_name, self.request, clean)
        self.rows_added += result.rows_added
        self.frames.append(clean)

    def bars(self, rest: pd.DataFrame) -> pd.DataFrame:
        """Everything fetched in this run: the flushed batches plus ``rest``."""
        frames = [f for f in (*self.frames, rest) if len(f)]
        return pd.concat(frames) if frames else empty_bars()


@flow(name="load-data", flow_run_name="load {symbol} {timeframe} {mode}", log_prints=False)
def load_data(
    symbol: str,
    timeframe: str = "1h",
    start: str | None = None,
    end: str | None = None,
    mode: str = "tail",
    source: str = "synthetic",
    exchange: str = "XNYS",
    store: str = "data",
    path: str | None = None,
    align: str = "auto",
    seed: int = 0,
    delay: float = 0.0,
    ib_host: str = DEFAULT_IB_HOST,
    ib_port: int = DEFAULT_IB_PORT,
    client_id: int = DEFAULT_CLIENT_ID,
    ib_time_scale: float = 1.0,
    source_options: dict[str, Any] | None = None,
) -> dict[str, Any] | State[Any]:
    """Load ``symbol`` bars of ``timeframe`` from ``source`` into the bar store at ``store``.

    The ``Args`` below are what the Prefect UI shows beside each field of the run form.

    Args:
        symbol: Ticker to load, e.g. `AAPL` or `SPY` (case-insensitive; stored upper-case).
        timeframe: Bar length: `1m`, `2m`, `3m`, `5m`, `10m`, `15m`, `20m`, `30m`, `1h`, `2h`,
            `3h`, `4h`, `8h` or `1d`. Default `1h`.
        start: First bar wanted: an ISO date or date-time such as `2024-01-02` or
            `2024-01-02 09:30`, in the exchange's time zone unless it has an offset. Empty
            (default): from the last stored bar (tail), from the source's earliest bar
            (backfill, full), or a recent lookback when nothing is stored. Never earlier than
            the source's earliest bar.
        end: Last bar wanted, written like `start`; a date without a time includes that whole
            day. Empty (default): up to now.
        mode: What to fetch: `tail` (default) from the last stored bar to `end`; `backfill`
            from `start` to the first stored bar; `full` both plus every gap in between;
            `local` nothing (no source calls: only check what is stored).
        source: Where bars come from: `synthetic` (default; deterministic bars, offline),
            `files` (CSV/Parquet files at `path`) or `ib` (Interactive Brokers through TWS,
            IB Gateway or `candleflow ib-sim` at `ib_host`:`ib_port`).
        exchange: Trading calendar, an exchange_calendars name such as `XNYS` (default, New
            York), `XNAS`, `XLON`, `XETR` or `CMES`. It decides which bars should exist
            (nights, weekends and holidays are never gaps) and the time zone of `start`/`end`.
        store: Folder of the Parquet bar store; a relative path is taken from the worker's
            working directory (the checkout). Default `data`.
        path: File or folder (CSV or Parquet) the `files` source imports; the other sources
            ignore it. Default: none.
        align: Grid of intraday bars: `auto` (default; detected from the file or the stored
            bars), `clock` (IB's: 09:30, 10:00, 11:00, … for 1h bars) or `session` (every bar
            length from the open: 09:30, 10:30, …). Daily bars ignore it.
        seed: Seed of the `synthetic` source: the same seed gives the same bars. Integer,
            default 0; the other sources ignore it.
        delay: Seconds the `synthetic` source waits per request, to imitate a slow source in
            demos and tests. ≥ 0, default 0; the other sources ignore it.
        ib_host: Host name or IP address of TWS, IB Gateway or `candleflow ib-sim` for the
            `ib` source. Default `127.0.0.1`.
        ib_port: TCP port of that gateway: 4002 (default; IB Gateway paper trading and
            `candleflow ib-sim`), 4001 IB Gateway live, 7497 TWS paper, 7496 TWS live.
        client_id: API client id of the `ib` connection, an integer no other client of the
            same gateway is using. Default 1.
        ib_time_scale: Factor (> 0) shrinking IB's pacing windows (10 min, 15 s, 2 s); must
            equal the simulator's `--time-scale`. Keep 1 (default) for a real gateway.
        source_options: Further options of the source as a JSON object, e.g.
            `{"head": "2020-01-02"}` or `{"unknown": ["ZZZZ"]}` for `synthetic`. An option the
            source does not take, or one that is a parameter above (give `delay`, not
            `{"delay": …}`), is rejected. Default: none.

    Returns:
        The load summary as a dict, or — when cancelled, after saving what was fetched — a
        Cancelled state whose message says how many bars were saved and how many are still
        missing.
    """
    request = LoadRequest.parse(
        symbol, timeframe, start=start, end=end, mode=mode, calendar=exchange, align=align
    )
    extra = _extra_options(source_options)
    bar_store = BarStore(store)
    key = artifact_key("load", request.symbol, request.timeframe.name)
    with open_run(f"load {request.label}", stage_plan(request.mode), key=key) as run:
        bar_source = make_source(
            source, path=path, seed=seed, delay=delay, cancel_wait=run.token.wait,
            ib_host=ib_host, ib_port=ib_port, client_id=client_id, time_scale=ib_time_scale,
            cancel_token=run.token, **extra,
            request_gate=ib_request_gate(source, ib_host, ib_port, ib_time_scale),
        )  # fmt: skip
        try:
            summary = _load(request, bar_source, bar_store)
        finally:
            bar_source.close()
        nothing_fetched = bool(summary.segments) and (
            len(summary.failed_segments) == summary.segments
        )
        if not summary.cancelled and not nothing_fetched:
            run.tracker.complete()
        result = summary.to_dict()
        if run.handle is not None:
            run.handle.summary = result
    _publish(key, request, summary)
    logger = get_run_logger()
    if summary.failed_segments:
        logger.warning(
            "%d of %d segments failed: %s",
            len(summary.failed_segments),
            summary.segments,
            "; ".join(summary.failed_segments),
        )
    if summary.cancelled:
        return cancelled_state(
            f"load {request.label} {cancel_cause(run)}: {summary.rows_added:,} new bars saved, "
            f"{summary.missing_bars_left:,} bars still missing"
        )
    if nothing_fetched:
        raise CandleflowError(
            f"load {request.label}: none of the {summary.segments} segments could be fetched "
            f"(first error: {summary.failed_segments[0]})"
        )
    return result


#: Source options that load_data sets itself: the parameter that gives each (None: internal).
_OWN_OPTIONS: Final[Mapping[str, str | None]] = {
    "path": "path", "seed": "seed", "delay": "delay", "ib_host": "ib_host", "ib_port": "ib_port",
    "client_id": "client_id", "time_scale": "ib_time_scale", "cancel_wait": None,
    "cancel_token": None, "request_gate": None,
}  # fmt: skip


def _extra_options(source_options: Mapping[str, Any] | None) -> dict[str, Any]:
    """``source_options`` checked not to clash with what load_data passes the source itself."""
    if source_options is None:
        return {}
    if not isinstance(source_options, Mapping):
        raise InvalidRequest(
            f"source_options must be a mapping of option names to values, got {source_options!r}"
        )
    extra = {str(k): v for k, v in source_options.items()}
    for option in extra:
        if option in _OWN_OPTIONS:
            param = _OWN_OPTIONS[option]
            how = f"give it as load_data's {param}= parameter" if param else "it is set internally"
            raise InvalidRequest(f"source_options may not contain {option!r}: {how}")
    return extra


def _load(request: LoadRequest, source: Source, store: BarStore) -> LoadSummary:
    """The stages in order (the flow's body, kept apart so the flow reads as set-up + report)."""
    started = time.monotonic()
    now = pd.Timestamp.now(tz="UTC")
    local_only = request.mode is LoadMode.LOCAL
    head: pd.Timestamp | None = None
    instrument = None
    if not local_only:
        instrument = validate_symbol(source, request)
        head = check_head_timestamp(source, instrument, request.timeframe)
    existing = load_local(store, source.name, request)
    completed = read_completed(store, source.name, request)
    stored = pd.DatetimeIndex(existing.index)
    request = resolve_alignment(request, None if local_only else source, stored)
    plan = analyze_gaps(request, stored, head, now)
    plan = plan_segments(request, plan, completed)
    fetched = FetchResult(empty_bars(), FetchStats())
    flush = StoreFlush(store, source.name, request)
    cancelled = False
    merged = existing
    calls_before = source.api_calls
    if instrument is not None:
        state = fetch_segments(
            source, instrument, request.timeframe, plan.segments, flush=flush, return_state=True
        )
        if state.is_cancelled():
            cancelled = True
        else:
            result = state.result()
            if isinstance(result, FetchResult):
                fetched = result
        merged = merge_bars(existing, flush.bars(fetched.bars))
        meta: dict[str, object] = {
            "align": request.grid_align,
            "head_timestamp": head.isoformat() if head is not None else None,
            "last_fetch": now.isoformat(),
            "api_calls": source.api_calls - calls_before,
            "fetch_duration_s": round(fetched.stats.duration_s, 3),
        }
        if not cancelled and not fetched.errors:
            meta.update(completed.after(plan).to_meta())
        written = save_bars(store, source.name, request, fetched.bars, meta)
        flush.rows_added += written.rows_added
    report = final_gaps(
        pd.DatetimeIndex(merged.index), request.calendar, request.timeframe, plan.start, plan.end,
        head=head, now=now, align=request.grid_align,
    )  # fmt: skip
    return LoadSummary(
        symbol=request.symbol,
        timeframe=request.timeframe.name,
        mode=request.mode.value,
        start=plan.start,
        end=plan.end,
        rows_before=len(existing),
        rows_after=len(merged),
        rows_added=flush.rows_added,
        segments=len(plan.segments),
        api_calls=source.api_calls - calls_before,
        duration_s=time.monotonic() - started,
        gaps_left=len(report.missing),
        missing_bars_left=report.bars(GapClass.MISSING),
        failed_segments=fetched.errors,
        cancelled=cancelled,
    )


def _publish(key: str, request: LoadRequest, summary: LoadSummary) -> None:
    state = "cancelled" if summary.cancelled else "completed"
    failed = "; ".join(summary.failed_segments) or "none"
    publish_summary(
        f"{key}-summary",
        f"load {request.label} ({request.mode.value}) {state}",
        [
            ("range", f"{summary.start.isoformat()} → {summary.end.isoformat()}"),
            ("rows added", f"{summary.rows_added:,}"),
            ("rows stored", f"{summary.rows_after:,}"),
            ("segments", summary.segments),
            ("API calls", summary.api_calls),
            ("gaps left", f"{summary.gaps_left} ({summary.missing_bars_left:,} bars missing)"),
            ("failed segments", failed),
            ("duration", f"{summary.duration_s:.2f} s"),
        ],
    )
