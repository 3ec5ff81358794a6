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

from collections.abc import Mapping
from dataclasses import fields
from typing import Any, Final

from prefect import flow, get_run_logger
from prefect.client.schemas.objects import State

from candleflow.errors import InvalidRequest, params_named
from candleflow.loading.pipeline import LoadRequest, load_series, stage_plan
from candleflow.sources.registry import (
    DEFAULT_CLIENT_ID,
    DEFAULT_IB_HOST,
    DEFAULT_IB_PORT,
    SourceOptions,
    make_source,
    parse_source_options,
)
from candleflow.store.bar_store import BarStore
from tasks.cancel import cancel_cause, cancelled_state
from tasks.load import run_stage_task
from tasks.pacing import ib_request_gate
from tasks.progress import artifact_key, open_run, publish_summary
from tasks.results import IN_MEMORY_RESULTS

__all__ = ["SOURCE_PARAMS", "load_data", "load_parameters"]


@flow(
    name="load-data",
    flow_run_name="load {symbol} {timeframe} {mode}",
    log_prints=False,
    **IN_MEMORY_RESULTS,
)
def load_data(
    symbol: str,
    timeframe: str = "1h",
    start: str | None = None,
    end: str | None = None,
    mode: str = "tail",
    source: str = "synthetic",
    exchange: str | None = None,
    store: str = "data",
    path: str | None = None,
    tz: str | None = None,
    strict: bool = False,
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
        exchange: Trading calendar, an exchange_calendars name such as `XNYS` (New York),
            `XNAS`, `XLON`, `XETR`, or `FX` (24/5) and `GLOBEX` (CME with its daily break).
            Empty (default): the instrument's own — `XNYS` for US stocks, `FX` for forex
            (`EUR.USD`), `GLOBEX` for futures (`ES:fut`). It decides which bars should exist
            (nights, weekends and holidays are never gaps) and the time zone of `start`/`end`.
        store: Folder of the Parquet bar store; a relative path is taken from the worker's
            working directory (the checkout). Default `data`.
        path: File or folder (CSV or Parquet) the `files` source imports; the other sources
            ignore it. Default: none.
        tz: Time zone of naive intraday times in the `files` source's files, an IANA name such
            as `Europe/London`. Empty (default): the exchange's (`exchange`). Times with an
            offset, epochs and a `Gmt time` column are UTC whatever it says.
        strict: `files` source only: refuse a file with any row breaking the price rules
            (price ≤ 0 or NaN, high below open/close, low above them, negative volume) instead
            of dropping and counting those rows. Default false.
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
    extra = _extra_options(source_options)
    with params_named(_param_names(extra), "load_data parameter"):
        request = LoadRequest.parse(
            symbol, timeframe, start=start, end=end, mode=mode, calendar=exchange, align=align
        )
        options = parse_source_options(
            source, path=path, calendar_tz=tz, strict=strict, seed=seed, delay=delay,
            ib_host=ib_host, ib_port=ib_port, client_id=client_id, time_scale=ib_time_scale,
            **extra,
        )  # fmt: skip
    bar_store = BarStore(store)
    key = artifact_key("load", request.symbol, request.timeframe.name)
    with open_run(f"load {request.label}", stage_plan(request.mode), key=key) as run:
        gate = ib_request_gate(source, ib_host, ib_port, ib_time_scale)
        bar_source = make_source(
            options, cancel_wait=run.token.wait, cancel_token=run.token, request_gate=gate
        )
        try:
            summary = load_series(request, bar_source, bar_store, tracker=run.tracker,
                                  run_stage=run_stage_task)  # fmt: skip
        finally:
            bar_source.close()
        if run.handle is not None:
            run.handle.summary = summary.to_dict()
        # Before the run's context closes: the summary goes out while the progress artifact's
        # last update does (the close waits for that one).
        publish_summary(f"{key}-summary", *summary.report())
    if summary.notice:
        get_run_logger().info("%s", summary.notice)
    if summary.failed_segments:
        get_run_logger().warning("%d of %d segments failed: %s", len(summary.failed_segments),
                                 summary.segments, "; ".join(summary.failed_segments))  # fmt: skip
    if summary.cancelled:
        return cancelled_state(f"load {request.label} {cancel_cause(run)}: {summary.outcome}")
    summary.raise_for_outcome()  # nothing could be fetched: the run fails
    return summary.to_dict()


#: load_data's parameter for each source option it takes by name (the others: source_options).
SOURCE_PARAMS: Final[Mapping[str, str]] = {
    "path": "path", "calendar_tz": "tz", "strict": "strict", "seed": "seed", "delay": "delay",
    "ib_host": "ib_host", "ib_port": "ib_port", "client_id": "client_id",
    "time_scale": "ib_time_scale",
}  # fmt: skip
#: What a source gets from the run itself, never from a parameter.
_INTERNAL: Final = frozenset({"cancel_wait", "cancel_token", "request_gate"})


def load_parameters(options: SourceOptions) -> dict[str, Any]:
    """The load_data parameters that give ``options``: ``source``, the options it takes by name,
    and the others (those not at their defaults) in ``source_options``."""
    params: dict[str, Any] = {"source": options.name}
    extra: dict[str, Any] = {}
    for field in fields(options):
        value = getattr(options, field.name)
        if value == field.default:
            continue
        if field.name in SOURCE_PARAMS:
            params[SOURCE_PARAMS[field.name]] = value
        else:
            extra[field.name] = value
    return params | ({"source_options": extra} if extra else {})


def _param_names(extra: Mapping[str, Any]) -> dict[str, str]:
    """The core's option names → load_data's parameters (an error names the one to fix)."""
    return {"source": "source", **SOURCE_PARAMS, **{k: f"source_options.{k}" for k in extra}}


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
        if option in SOURCE_PARAMS:
            how = f"give it as load_data's {SOURCE_PARAMS[option]}= parameter"
            raise InvalidRequest(f"source_options may not contain {option!r}: {how}")
        if option in _INTERNAL:
            raise InvalidRequest(f"source_options may not contain {option!r}: it is set internally")
    return extra
