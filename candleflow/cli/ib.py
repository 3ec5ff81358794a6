"""``candleflow ib-sim``: the loopback IB Gateway simulator in the foreground until Ctrl+C/SIGTERM.

It is :class:`~candleflow.ibsim.IBSimulator` (the same server the demo and the tests start in a
background thread) with the CLI's conventions: the first stdout line says where it listens, a
port already in use is an error on one line (exit 1), and Ctrl+C or SIGTERM stop it cleanly
(exit 0) after a one-line summary of what it served. Point loads at it with
``candleflow load SYMBOL --source ib --ib-port PORT`` (and ``--ib-time-scale`` equal to its
``--time-scale`` when that is not 1).
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from candleflow.cli.common import EXIT_OK
from candleflow.errors import CandleflowError, InvalidRequest, SourceUnavailable


class _StopSignal(Exception):
    """Raised in the main thread by the SIGINT/SIGTERM handler: stop serving."""


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    # Raising (rather than setting an Event) takes no lock inside a signal handler.
    raise _StopSignal(signal.Signals(signum).name)


def ib_sim(
    port: Annotated[int, typer.Option(help="Port to listen on (0 picks a free one).")] = 4002,
    host: Annotated[str, typer.Option(help="Loopback address to bind.")] = "127.0.0.1",
    seed: Annotated[int, typer.Option(help="Seed of the synthetic bars it serves.")] = 0,
    time_scale: Annotated[
        float,
        typer.Option(help="Pacing windows x this (0.01: IB's 10 min last 6 s); clients match it."),
    ] = 1.0,
    fail_after: Annotated[
        int | None,
        typer.Option(metavar="N", help="Drop the connection after N historical requests."),
    ] = None,
    stay_down: Annotated[
        bool, typer.Option("--stay-down", help="After a drop, refuse connections (gateway down).")
    ] = False,
    no_pacing: Annotated[
        bool, typer.Option("--no-pacing", help="Do not enforce IB's pacing rules.")
    ] = False,
    delay: Annotated[float, typer.Option(help="Seconds before each historical answer.")] = 0.0,
    symbols: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            help="Instrument directory CSV added to the shipped one (columns as "
            "candleflow/ibsim/instruments.csv).",
        ),
    ] = None,
    replace_symbols: Annotated[
        bool,
        typer.Option("--replace-symbols", help="Serve only the instruments of --symbols FILE."),
    ] = False,
) -> int:
    """Run the offline IB Gateway simulator (TWS API v176) until Ctrl+C or SIGTERM.

    Real ib_async/ib_insync clients connect to it unchanged.
    It serves the synthetic bars of --seed and enforces IB's pacing (scaled by --time-scale).
    """
    from candleflow.ibsim import Faults, IBSimulator, load_directory

    if not 0 <= port <= 65535:
        raise InvalidRequest(f"--port must be 0-65535 (0 picks a free port), got {port}")
    if fail_after is not None and fail_after < 0:
        raise InvalidRequest(f"--fail-after must be >= 0 requests, got {fail_after}")
    if replace_symbols and symbols is None:
        raise InvalidRequest("--replace-symbols needs --symbols FILE: the instruments to serve")
    directory = load_directory(symbols, replace=replace_symbols)
    faults = Faults(drop_after=fail_after, stay_down=stay_down, delay=delay)
    sim = IBSimulator(
        host, port, seed, time_scale, not no_pacing, faults=faults, directory=directory
    )
    if threading.current_thread() is not threading.main_thread():
        raise CandleflowError("ib-sim must run in the main thread (it stops on signals)")
    previous = {sig: signal.signal(sig, _raise_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            sim.start()
        except SourceUnavailable as exc:
            raise SourceUnavailable(f"{exc}; choose another --port (0 picks a free one)") from exc
        pacing = f"pacing on, time scale {time_scale:g}" if not no_pacing else "pacing off"
        print(
            f"IB simulator listening on {sim.host}:{sim.port} (seed {seed}, {pacing}); "
            f"Ctrl+C stops it",
            flush=True,
        )
        threading.Event().wait()  # until a signal handler raises _StopSignal
    except _StopSignal:
        pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sim.stop()
    stats = sim.stats
    print(
        f"IB simulator stopped: {stats.connections} connection(s), "
        f"{stats.historical_requests} historical request(s), {stats.bars_sent:,} bars, "
        f"{stats.violations} pacing violation(s)",
        flush=True,
    )
    return EXIT_OK


def quiet_client_logs() -> None:
    """Silence ib_async's/ib_insync's own error log lines in the CLI.

    The IB source turns every IB error into a typed exception that the CLI prints on one line;
    the client library's log of the same error would only repeat it, spread over several lines.
    """
    for name in ("ib_async", "ib_insync"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def register(app: typer.Typer) -> None:
    app.command(name="ib-sim")(ib_sim)
