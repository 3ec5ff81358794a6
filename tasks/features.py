"""Feature engineering as a Prefect task (DESIGN §6): one core call, progress "Feature i/N".

The task opens the ``compute_features`` stage on the running flow's tracker, so the progress
artifact (and a backfill's queue row) shows which feature is being computed. A cancel between
features ends the task Cancelled with nothing written (the feature store writes only at the end).
"""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State
from prefect.states import Cancelled

from candleflow.errors import Cancelled as CancelledError
from candleflow.features.store import FeatureStore, UpdateResult, update_features
from candleflow.store.bar_store import BarStore
from tasks.progress import current_run

__all__ = ["update_series_features"]


@task(cache_policy=NO_CACHE)
def update_series_features(
    store: str, source: str, symbol: str, timeframe: str, spec: object = "default"
) -> UpdateResult | State[Any]:
    """Bring the series' stored features up to date (incrementally) with its bars."""
    run = current_run()
    bar_store = BarStore(store)
    try:
        with run.tracker.stage("compute_features", unit="Feature") as span:
            return update_features(
                bar_store, FeatureStore(bar_store), source, symbol, timeframe, spec, span
            )
    except CancelledError as exc:
        return Cancelled(message=str(exc))
