"""A loopback IB Gateway simulator speaking the TWS API text protocol (server version 176).

The real ``ib_async``/``ib_insync`` clients run against it unchanged: handshake, connect-time
requests, contract details from an instrument directory (stocks, ETFs, forex pairs, futures,
indices; :mod:`~candleflow.ibsim.directory`), head timestamps, historical bars from the synthetic
source on each instrument's calendar, IB's
pacing rules (time-scaled) and fault injection. ``IBSimulator`` runs it in a background thread;
``python -m candleflow.ibsim`` (``main``) runs it in the foreground.
"""

from __future__ import annotations

from candleflow.ibsim.data import HistoricalQuery, IBError, SimulatedData
from candleflow.ibsim.directory import Directory, Listing, SimContract
from candleflow.ibsim.faults import Faults
from candleflow.ibsim.server import IBSimulator, SimStats, load_directory, main

__all__ = [
    "Directory",
    "Faults",
    "HistoricalQuery",
    "IBError",
    "IBSimulator",
    "Listing",
    "SimContract",
    "SimStats",
    "SimulatedData",
    "load_directory",
    "main",
]
