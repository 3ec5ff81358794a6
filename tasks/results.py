"""How our flows treat Prefect results: kept in memory, never persisted.

A flow's return value (a summary dict) reaches its caller in memory and its artifacts in the API;
nothing reads persisted results back. Saying so on the decorator (``persist_result=False`` and a
storage of our own) spares every run Prefect's three requests for the server's default result
storage (``GET /admin/storage``), a sixth of a short run's orchestration cost (issue 15).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Final

__all__ = ["IN_MEMORY_RESULTS"]

#: Keyword arguments for ``@flow``: results in memory; the storage path is never written.
IN_MEMORY_RESULTS: Final[dict[str, Any]] = {
    "persist_result": False,
    "result_storage": Path(tempfile.gettempdir()) / "candleflow-results-unused",
}
