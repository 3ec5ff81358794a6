"""candleflow: load, check, store and study historical market bars.

The package is the pure core: it never imports Prefect. Orchestration lives in the top-level
``tasks`` and ``flows`` packages, which wrap the functions defined here.
"""

from candleflow.errors import (
    Cancelled,
    CandleflowError,
    InvalidRequest,
    NoData,
    PacingViolation,
    SourceUnavailable,
    StoreCorrupted,
    UnknownSymbol,
)

__version__ = "0.1.0"

__all__ = [
    "Cancelled",
    "CandleflowError",
    "InvalidRequest",
    "NoData",
    "PacingViolation",
    "SourceUnavailable",
    "StoreCorrupted",
    "UnknownSymbol",
    "__version__",
]
