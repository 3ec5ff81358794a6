"""Reading flow runs back from the Prefect API, for ``runs``, ``watch`` and ``cancel``: their
progress, and the run a (possibly shortened) id names."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any
from uuid import UUID

from candleflow.errors import InvalidRequest

__all__ = [
    "check_run_ref",
    "read_run_artifacts",
    "read_run_progress",
    "resolve_run_id",
    "short_ids",
]

_ID_PREFIX = re.compile(r"[0-9a-f-]{1,36}")
_PAGE = 200
SHORT_ID = 8  # as git shortens commits: enough to be unique among thousands of runs


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


def resolve_run_id(client: Any, text: str) -> UUID:
    """The flow run ``text`` names: a whole id, or the start of exactly one run's id.

    Malformed, unknown or ambiguous ids are ``InvalidRequest`` (bad input, exit 2); an
    ambiguous prefix's message names the candidates.
    """
    given = check_run_ref(text)
    if isinstance(given, UUID):
        return given
    matches = [run for run in _all_runs(client) if str(run.id).startswith(given)]
    if not matches:
        raise InvalidRequest(f"no flow run id starts with {text!r}: see `candleflow runs`")
    if len(matches) > 1:
        shown = ", ".join(f"{run.id} ({run.name})" for run in matches[:5])
        more = f" and {len(matches) - 5} more" if len(matches) > 5 else ""
        raise InvalidRequest(
            f"flow run id {text!r} is ambiguous: {len(matches)} runs start with it ({shown}"
            f"{more}); give more of the id"
        )
    return UUID(str(matches[0].id))


def check_run_ref(text: str) -> UUID | str:
    """``text`` as a whole run id, or as the id prefix it is (lower case); malformed (not hex
    digits and dashes): ``InvalidRequest``. Needs no API, so bad input fails at once."""
    given = text.strip().lower()
    try:
        return UUID(given)
    except ValueError:
        pass
    if not _ID_PREFIX.fullmatch(given) or not given.strip("-"):
        raise InvalidRequest(
            f"malformed flow run id {text!r}: give the id shown by `candleflow runs` "
            "(or enough of its start to be unique)"
        )
    return given


def _all_runs(client: Any) -> list[Any]:
    """Every flow run (id and name), newest first, page by page."""
    from prefect.client.schemas.sorting import FlowRunSort

    found: list[Any] = []
    while True:
        page = client.read_flow_runs(
            sort=FlowRunSort.EXPECTED_START_TIME_DESC, limit=_PAGE, offset=len(found)
        )
        found.extend(page)
        if len(page) < _PAGE:
            return found


def short_ids(ids: Sequence[UUID]) -> dict[UUID, str]:
    """Each id shortened to its first ``SHORT_ID`` characters, longer where that would not be
    unique among ``ids`` (so any id shown can be pasted into ``watch`` or ``cancel``)."""
    texts = [str(i) for i in ids]
    shown: dict[UUID, str] = {}
    for run_id, text in zip(ids, texts, strict=True):
        size = SHORT_ID
        while size < len(text) and any(
            other != text and other.startswith(text[:size]) for other in texts
        ):
            size += 1
        shown[run_id] = text[:size]
    return shown
