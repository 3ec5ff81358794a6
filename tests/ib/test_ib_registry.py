"""``make_source("ib", ...)`` and the IB demo without Prefect: one limiter per gateway, clear
errors for a gateway that is not there, cancellation wired through, bars equal to the synthetic
source's."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pandas as pd
import pytest

from candleflow.cli.demo import IB_TIME_SCALE, run_demo
from candleflow.errors import Cancelled, InvalidRequest, SourceUnavailable
from candleflow.ibsim import IBSimulator
from candleflow.loading.pipeline import LoadRequest
from candleflow.models import Segment
from candleflow.progress import CancelToken
from candleflow.sources.ib import IBSource
from candleflow.sources.registry import check_gateway, make_source
from candleflow.sources.synthetic import SyntheticSource
from candleflow.store.bar_store import BarStore
from tests.timing import budget


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_ib_sources_of_one_gateway_share_one_limiter(sim: IBSimulator) -> None:
    options = dict(ib_port=sim.port, time_scale=sim.time_scale)
    first = make_source("ib", client_id=1, **options)
    second = make_source("ib", client_id=2, **options)
    try:
        assert isinstance(first, IBSource) and isinstance(second, IBSource)
        assert first.limiter is second.limiter
        assert first.limiter.time_scale == sim.time_scale
        assert (first.host, first.port, second.client_id) == ("127.0.0.1", sim.port, 2)
        assert first.validate("AAPL").con_id > 0
    finally:
        first.close()
        second.close()
    with pytest.raises(InvalidRequest, match="shared limiter"):
        make_source("ib", ib_port=sim.port, time_scale=1.0)  # same gateway, other pacing


def test_a_gateway_that_is_not_there_is_named_with_what_to_start() -> None:
    port = _free_port()
    started = time.monotonic()
    with pytest.raises(SourceUnavailable) as info:
        make_source("ib", ib_port=port)
    assert time.monotonic() - started < budget(1.0)  # no client connect, no retries
    message = str(info.value)
    assert f"no IB gateway at 127.0.0.1:{port} (connection refused)" in message
    assert f"candleflow ib-sim --port {port}" in message and "\n" not in message
    with pytest.raises(SourceUnavailable, match="unknown host"):
        check_gateway("no-such-host.invalid", 4002)


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({"ib_port": 0}, "1-65535"),
        ({"ib_port": "x"}, "ib_port must be an integer"),
        ({"client_id": -1}, "client_id must be >= 0"),
        ({"time_scale": 0}, "time_scale must be a positive number"),
        ({"time_scale": float("nan")}, "time_scale must be a positive number"),
        ({"ib_host": " "}, "ib_host is empty"),
        ({"seed": 3}, "does not apply to source 'ib'"),
    ],
)
def test_bad_ib_options_are_invalid_requests(options: dict[str, object], needle: str) -> None:
    with pytest.raises(InvalidRequest, match=needle):
        make_source("ib", **options)


def test_ib_options_at_their_defaults_do_not_bother_other_sources() -> None:
    source = make_source(
        "synthetic", ib_host="127.0.0.1", ib_port=4002, client_id=1, time_scale=1.0,
        cancel_token=CancelToken(),
    )  # fmt: skip
    assert source.name == "synthetic"
    with pytest.raises(InvalidRequest, match="ib_port=7497 does not apply"):
        make_source("synthetic", ib_port=7497)


def test_the_cancel_token_reaches_the_ib_source(sim: IBSimulator) -> None:
    token = CancelToken()
    source = make_source("ib", ib_port=sim.port, time_scale=sim.time_scale, cancel_token=token)
    try:
        instrument = source.validate("MSFT")
        token.cancel("stop")
        segment = Segment(
            pd.Timestamp("2024-03-04 14:30", tz="UTC"),
            pd.Timestamp("2024-03-05 21:00", tz="UTC"),
            14,
        )
        with pytest.raises(Cancelled, match="stop"):
            source.fetch(instrument, "1h", segment)  # stopped at the pacing limiter
    finally:
        source.close()
    assert sim.stats.historical_requests == 0


def test_the_ib_demo_loads_the_synthetic_bars_through_the_simulator(tmp_path: Path) -> None:
    result = run_demo(
        tmp_path, symbols=["AAPL"], timeframes=["1d", "1h"], start="2024-01-01",
        end="2024-03-31", direct=True,
    )  # fmt: skip
    assert result.source == "ib" and result.gateway is not None
    assert [(run, s.timeframe) for run, s in result.loads] == [
        ("full", "1d"), ("full", "1h"), ("tail", "1d"), ("tail", "1h"),
    ]  # fmt: skip
    # 1d: one request ("1 Y" span); 1h: three ("1 M" each); the tail run fetches nothing.
    assert (result.ib_requests, result.pacing_violations) == (4, 0)
    assert [s.rows_added for _, s in result.loads][2:] == [0, 0]
    for tf in ("1d", "1h"):
        request = LoadRequest.parse("AAPL", tf, start="2024-01-01", end="2024-03-31")
        assert request.start is not None and request.end is not None
        expected = SyntheticSource(7).bars("AAPL", tf, request.start, request.end)
        stored = BarStore(tmp_path).read("ib", "AAPL", tf)
        pd.testing.assert_frame_equal(stored, expected, check_freq=False)
    assert IB_TIME_SCALE < 1


def test_the_synthetic_demo_needs_no_simulator(tmp_path: Path) -> None:
    result = run_demo(
        tmp_path, source="synthetic", symbols=["MSFT"], timeframes=["1d"], start="2024-01-01",
        end="2024-01-31", direct=True,
    )  # fmt: skip
    assert (result.source, result.gateway, result.ib_requests) == ("synthetic", None, 0)
    assert len(BarStore(tmp_path).read("synthetic", "MSFT", "1d")) == 21
    with pytest.raises(InvalidRequest, match="unknown demo source 'yahoo'"):
        run_demo(tmp_path, source="yahoo")


def test_a_simulator_that_cannot_bind_fails_at_once_instead_of_hanging() -> None:
    from candleflow.errors import SourceUnavailable
    from candleflow.ibsim import IBSimulator

    with pytest.raises(SourceUnavailable, match="70000"):
        IBSimulator(port=70000).start()
