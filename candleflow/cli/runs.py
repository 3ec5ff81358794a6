"""Reading flow runs' progress back from the Prefect API, for ``runs`` and ``watch``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

__all__ = ["read_run_artifacts", "read_run_progress"]


def read_run_artifacts(
    client: Any, flow_run_ids: Sequence[UUID], types: Sequence[str] = ("progress",)
) -> list[Any]:
    """Artifacts of the given flow runs, most recently updated first (a sync Prefect client)."""
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        ArtifactFilterType,
    )
    from prefect.client.schemas.sorting import ArtifactSort

    if not flow_run_ids:
        return []
    artifact_filter = ArtifactFilter(
        flow_run_id=ArtifactFilterFlowRunId(any_=list(flow_run_ids)),
        type=ArtifactFilterType(any_=list(types)),
    )
    return list(
        client.read_artifacts(
            artifact_filter=artifact_filter, sort=ArtifactSort.UPDATED_DESC, limit=200, offset=0
        )
    )


def read_run_progress(client: Any, flow_run_ids: Sequence[UUID]) -> dict[UUID, tuple[float, str]]:
    """The progress (0–100) and description of each flow run's progress artifact."""
    found: dict[UUID, tuple[float, str]] = {}
    for artifact in read_run_artifacts(client, flow_run_ids):
        run_id, data = artifact.flow_run_id, artifact.data
        if run_id is not None and run_id not in found and isinstance(data, int | float):
            found[run_id] = (float(data), artifact.description or "")
    return found
