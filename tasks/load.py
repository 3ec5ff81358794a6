"""The eight data-loading stages as Prefect tasks (DESIGN §2), one core call each.

Each task opens its progress stage on the running flow's tracker (``tasks.progress``), so the
progress artifact follows the pipeline stage by stage. Tasks that take frames, sources or stores
use ``NO_CACHE``: nothing here is worth caching, and hashing a large frame costs more than the
stage. Only source I/O declares retries: validation and the head timestamp retry on
``SourceUnavailable``; the fetch task does not retry (segment retries, with backoff and
cancellation, live in the core, and retrying the task would refetch every segment). No task
timeouts: Prefect cannot interrupt blocking I/O in a worker thread, so request timeouts belong to
the source adapters (DESIGN §4.3), and cancellation is cooperative.

:func:`run_stage_task` is the pipeline's stage runner inside a flow
(:func:`candleflow.loading.pipeline.load_series` composes the stages; this runs each as its task).
It hands a stage's sequences (the fetch stage's segments) to Prefect as ``opaque``: Prefect looks
for upstream results in every element of a task's inputs, twice per call (~25 ms for the ~500
segments of two years of 1-minute bars), and finds the one it can find on the list itself — the
plan's — so the run's task graph keeps the same edges.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar, cast

import pandas as pd
from prefect import Task, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State, TaskRun
from prefect.states import Cancelled
from prefect.utilities.annotations import opaque

from candleflow.errors import Cancelled as CancelledError
from candleflow.errors import SourceUnavailable
from candleflow.loading import pipeline as loading
from candleflow.loading.pipeline import FetchResult, LoadPlan, LoadRequest, RetryPolicy
from candleflow.models import Instrument, Segment
from candleflow.sources.base import Source
from candleflow.store.bar_store import BarStore, WriteResult
from candleflow.timeframes import Timeframe
from tasks.progress import current_run

__all__ = [
    "analyze_gaps",
    "check_head_timestamp",
    "fetch_segments",
    "load_local",
    "merge_bars",
    "plan_segments",
    "run_stage_task",
    "save_bars",
    "validate_symbol",
]


def _source_unavailable(task: Task[..., Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Retry only when the source could not be reached (not for an unknown symbol)."""
    try:
        state.result(raise_on_failure=True)
    except SourceUnavailable:
        return True
    except Exception:
        return False
    return False


_RETRY = RetryPolicy()  # the core's default segment retries
_SOURCE_IO: dict[str, Any] = {
    "cache_policy": NO_CACHE,
    "retries": 2,
    "retry_delay_seconds": [1, 5],
    "retry_condition_fn": _source_unavailable,
}


@task(**_SOURCE_IO)
def validate_symbol(source: Source, request: LoadRequest) -> Instrument:
    """Stage 1: the source resolves the instrument."""
    with current_run().tracker.stage("validate_symbol"):
        return loading.validate_symbol(source, request)


@task(**_SOURCE_IO)
def check_head_timestamp(
    source: Source, instrument: Instrument, timeframe: Timeframe
) -> pd.Timestamp:
    """Stage 2: the earliest bar the source has."""
    with current_run().tracker.stage("check_head_timestamp"):
        return loading.check_head_timestamp(source, instrument, timeframe)


@task(cache_policy=NO_CACHE)
def load_local(store: BarStore, source_name: str, request: LoadRequest) -> pd.DataFrame:
    """Stage 3: what the store already holds."""
    with current_run().tracker.stage("load_local"):
        return loading.load_local(store, source_name, request)


@task(cache_policy=NO_CACHE)
def analyze_gaps(
    request: LoadRequest, stored: pd.DatetimeIndex, head: pd.Timestamp | None, now: pd.Timestamp
) -> LoadPlan:
    """Stage 4: expected bars vs. stored bars over the resolved range."""
    with current_run().tracker.stage("analyze_gaps"):
        return loading.analyze_gaps(request, stored, head, now)


@task(cache_policy=NO_CACHE)
def plan_segments(
    request: LoadRequest, plan: LoadPlan, completed: loading.Completed | None = None
) -> LoadPlan:
    """Stage 5: the source requests covering the gaps this mode fills."""
    with current_run().tracker.stage("plan_segments"):
        return loading.plan_segments(request, plan, completed)


@task(cache_policy=NO_CACHE)
def fetch_segments(
    source: Source,
    instrument: Instrument,
    timeframe: Timeframe,
    segments: Sequence[Segment],
    flush: Callable[[pd.DataFrame], None] | None = None,
    retry: RetryPolicy = _RETRY,
) -> FetchResult | State[Any]:
    """Stage 6: fetch every segment (journaling each); ends Cancelled when the token is set."""
    run = current_run()
    try:
        with loading.open_stage(run.tracker, "fetch_segments", len(segments)) as span:
            return loading.fetch_segments(source, instrument, timeframe, segments, span=span,
                                          token=run.token, retry=retry, flush=flush)  # fmt: skip
    except CancelledError as exc:
        return Cancelled(message=str(exc))


@task(cache_policy=NO_CACHE)
def merge_bars(existing: pd.DataFrame, fetched: pd.DataFrame) -> pd.DataFrame:
    """Stage 7: union with the stored bars, dedup by timestamp (fetched wins), sort."""
    with current_run().tracker.stage("merge_bars"):
        return loading.merge_bars(existing, fetched)


@task(cache_policy=NO_CACHE)
def save_bars(
    store: BarStore,
    source_name: str,
    request: LoadRequest,
    bars: pd.DataFrame,
    meta: dict[str, object] | None = None,
) -> WriteResult:
    """Stage 8: each touched partition written once with the fetched bars, and the metadata."""
    with current_run().tracker.stage("save_bars"):
        return loading.save_bars(store, source_name, request, bars, meta)


_STAGE_TASKS: Mapping[str, Task[..., Any]] = {
    "validate_symbol": validate_symbol,
    "check_head_timestamp": check_head_timestamp,
    "load_local": load_local,
    "analyze_gaps": analyze_gaps,
    "plan_segments": plan_segments,
    "fetch_segments": fetch_segments,
    "merge_bars": merge_bars,
    "save_bars": save_bars,
}
_T = TypeVar("_T")


def run_stage_task(name: str, fn: Callable[..., _T], /, *args: Any, **kwargs: Any) -> _T:
    """The pipeline's stage runner in a flow: stage ``name`` as its task (which calls ``fn``).

    A task that ended Cancelled raises the core's ``Cancelled``, as the stage itself would.
    """
    args = tuple(_opaque_sequence(a) for a in args)
    kwargs = {k: _opaque_sequence(v) for k, v in kwargs.items()}
    state = _STAGE_TASKS[name](*args, return_state=True, **kwargs)
    if state.is_cancelled():
        raise CancelledError(state.message or f"{name} cancelled")
    return cast(_T, state.result())


def _opaque_sequence(value: Any) -> Any:
    """A list or tuple as ``opaque`` (Prefect links it to the task that returned it, and never
    walks its elements); anything else as it is."""
    return opaque(value) if isinstance(value, list | tuple) else value
