"""The shared-pacing gate: where the IB source passes it, its sizing, its waits and fallbacks.

No Prefect server here: the Prefect gate (``tasks.pacing``) runs against fake clients; the real
server is exercised by ``tests/e2e/test_pacing_across_workers.py``. IB's numbers (60 requests per
600 s) are transcribed from the IB docs, not read back from ``candleflow.sources.pacing``.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import logging
import random
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pandas as pd
import pytest
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

from candleflow.errors import Cancelled, InvalidRequest
from candleflow.ibsim import IBSimulator
from candleflow.models import Segment
from candleflow.progress import CancelToken
from candleflow.sources.ib import IBSource
from candleflow.sources.pacing import (
    IB_PACING,
    OPEN_GATE,
    PacingJudge,
    PacingLimiter,
    RequestKey,
    shared_rate_budget,
)
from tasks.pacing import (
    SHARED_PACING_ENV,
    SLOTS_PER_REQUEST,
    PrefectRateGate,
    busy_delay,
    client_without_retries,
    ib_request_gate,
    pacing_limit_name,
)
from tests.timing import Running

IB_MAX_REQUESTS = 60  # IB docs: no more than 60 historical requests ...
IB_WINDOW = 600.0  # ... within any 10-minute period
SCALES = (1.0, 0.5, 0.1, 0.05, 0.02, 0.01, 0.001)
DAY = pd.Timestamp("2024-03-04 14:30", tz="UTC")


def _segment(day: int) -> Segment:
    start = DAY + pd.Timedelta(days=day)
    return Segment(start, start + pd.Timedelta(hours=6, minutes=30), 7)


class RecordingGate:
    """Remembers, at each acquire, how many historical requests the simulator had received."""

    def __init__(self, sim: IBSimulator) -> None:
        self.sim = sim
        self.seen: list[int] = []
        self.tokens: list[CancelToken | None] = []

    def acquire(self, token: CancelToken | None) -> None:
        self.seen.append(self.sim.stats.historical_requests)
        self.tokens.append(token)


class BlockingGate:
    """Blocks until the token it is given is cancelled (as a gate waiting for a slot does)."""

    def __init__(self) -> None:
        self.entered = threading.Event()

    def acquire(self, token: CancelToken | None) -> None:
        assert token is not None, "the source must hand its CancelToken to the gate"
        self.entered.set()
        if token.wait(600):
            raise Cancelled(token.reason)


def _source(sim: IBSimulator, **kwargs: Any) -> IBSource:
    return IBSource(port=sim.port, limiter=PacingLimiter(time_scale=sim.time_scale), **kwargs)


# ------------------------------------------------------------------ the core's use of the gate


def test_the_source_passes_the_gate_once_per_historical_request_before_sending(
    sim: IBSimulator,
) -> None:
    gate = RecordingGate(sim)
    token = CancelToken()
    with _source(sim, request_gate=gate, cancel_token=token) as source:
        instrument = source.validate("AAPL")
        source.head_timestamp(instrument, "1h")
        assert gate.seen == []  # contract details and head timestamps are not paced
        for day in range(3):
            source.fetch(instrument, "1h", _segment(day))
    # Each acquire came before its request reached the gateway: 0, then 1, then 2 seen.
    assert gate.seen == [0, 1, 2]
    assert sim.stats.historical_requests == 3
    assert gate.tokens == [token] * 3


def test_the_default_gate_is_open(sim: IBSimulator) -> None:
    with _source(sim) as source:
        assert source.request_gate is OPEN_GATE
        instrument = source.validate("AAPL")
        source.fetch(instrument, "1h", _segment(0))
    assert sim.stats.historical_requests == 1


def test_a_cancel_interrupts_a_blocked_gate_and_nothing_is_sent(sim: IBSimulator) -> None:
    gate = BlockingGate()
    token = CancelToken()
    with _source(sim, request_gate=gate, cancel_token=token) as source:
        instrument = source.validate("AAPL")
        fetch = Running(lambda: source.fetch(instrument, "1h", _segment(0)))
        assert gate.entered.wait(60), "the fetch never reached the gate"
        token.cancel("user asked")
        with pytest.raises(Cancelled, match="user asked"):
            fetch.result(60, "the fetch blocked at the gate")
    assert sim.stats.historical_requests == 0


def test_make_source_hands_the_gate_to_ib_sources_only(sim: IBSimulator) -> None:
    from candleflow.sources.registry import make_source

    gate = RecordingGate(sim)
    ib = make_source("ib", ib_port=sim.port, time_scale=sim.time_scale, request_gate=gate)
    try:
        assert getattr(ib, "request_gate", None) is gate
    finally:
        ib.close()
    synthetic = make_source("synthetic", request_gate=gate)  # a hint the source does not need
    synthetic.close()


# ------------------------------------------------------------------ sizing


@pytest.mark.parametrize("scale", SCALES)
def test_the_shared_budget_never_allows_more_than_ibs_60_per_rolling_window(scale: float) -> None:
    budget = shared_rate_budget(time_scale=scale)
    window = IB_WINDOW * scale
    assert budget.window == pytest.approx(window)
    assert budget.burst == 30 and budget.rate > 0
    # A bucket hands out at most burst + rate*T in any T seconds.
    assert budget.burst + budget.rate * window <= IB_MAX_REQUESTS
    # ... and requests that leave up to `slack` after their token still fit one window.
    assert budget.most_in(window + budget.slack) <= IB_MAX_REQUESTS + 1e-9
    # The sizes on the server: whole slots, SLOTS_PER_REQUEST per request.
    gate = PrefectRateGate("x", budget, client=_unused)
    assert gate.limit_slots == 30 * SLOTS_PER_REQUEST
    assert gate.decay_slots == pytest.approx(budget.rate * SLOTS_PER_REQUEST)


def test_the_budget_at_ibs_real_scale() -> None:
    # 30 at once, then one per (600 s + 15 s identical-request window + 1 s send delay) / 30.
    budget = shared_rate_budget()
    assert budget.burst == 30 and budget.slack == pytest.approx(16.0)
    assert budget.interval == pytest.approx(616 / 30)


def test_a_bucket_of_60_decaying_60_per_600s_is_not_ibs_rule() -> None:
    # The counter-example the sizing avoids: 60 at once, then one every 10 s → 120 in 600 s.
    assert 60 + (60 / IB_WINDOW) * IB_WINDOW > IB_MAX_REQUESTS
    assert _violations(60, 60 / IB_WINDOW, slack=0.0, scale=1.0) > 0


@pytest.mark.parametrize("scale", [1.0, 0.02])
def test_greedy_workers_on_the_shared_budget_never_break_ibs_window(scale: float) -> None:
    budget = shared_rate_budget(time_scale=scale)
    assert _violations(budget.burst, budget.rate, budget.slack, scale) == 0


def _violations(burst: int, rate: float, slack: float, scale: float) -> int:
    """Greedy senders on a token bucket, each request leaving up to ``slack`` after its token,
    judged by IB's rules (distinct contracts, so only the 60-per-window rule can bite)."""
    rng = random.Random(42)
    level, at = 0.0, 0.0
    ready = [0.0, 0.0, 0.0]  # three workers
    sends: list[float] = []
    for _ in range(400):
        worker = min(range(len(ready)), key=ready.__getitem__)
        t = max(ready[worker], at)
        level = max(0.0, level - rate * (t - at))
        if level + 1 > burst:
            t += (level + 1 - burst) / rate
            level = burst - 1.0
        level += 1
        at = t
        send = t + rng.uniform(0.0, slack)
        sends.append(send)
        ready[worker] = send + rng.uniform(0.001, 0.05)
    judge = PacingJudge(IB_PACING, time_scale=scale)
    for n, send in enumerate(sorted(sends)):
        judge.judge(RequestKey(f"C{n}", params=str(n)), now=send)
        judge.finish()
    return judge.violations


# ------------------------------------------------------------------ the Prefect gate, faked


def _unused() -> contextlib.AbstractContextManager[Any]:
    raise AssertionError("no client expected")


def _status(code: int, **headers: str) -> httpx.HTTPStatusError:
    request = httpx.Request("POST", "http://prefect.test/api/v2/concurrency_limits/increment")
    response = httpx.Response(code, headers=headers, request=request, json={"detail": "x"})
    return httpx.HTTPStatusError(f"HTTP {code}", request=request, response=response)


class FakeLimit:
    def __init__(self, limit: int, decay: float, active: bool = True) -> None:
        self.limit, self.slot_decay_per_second, self.active = limit, decay, active


class FakeClient:
    """Answers as the API would; ``plan`` lists what each increment does (then 200 for ever)."""

    def __init__(self, *, exists: FakeLimit | None = None, race: bool = False) -> None:
        self.limit = exists
        self.race = race
        self.plan: list[BaseException | list[object]] = []
        self.created: list[Any] = []
        self.increments = 0
        self.attempted = threading.Event()

    @contextlib.contextmanager
    def __call__(self) -> Iterator[FakeClient]:
        yield self

    def read_global_concurrency_limit_by_name(self, name: str) -> FakeLimit:
        if self.limit is None:
            raise ObjectNotFound(http_exc=_status(404))
        return self.limit

    def create_global_concurrency_limit(self, create: Any) -> None:
        self.created.append(create)
        if self.race:
            raise ObjectAlreadyExists(http_exc=_status(409))
        self.limit = FakeLimit(create.limit, create.slot_decay_per_second)

    def increment_concurrency_slots(self, names: list[str], slots: int, mode: str) -> Any:
        assert (slots, mode) == (SLOTS_PER_REQUEST, "rate_limit")
        self.increments += 1
        self.attempted.set()
        step = self.plan.pop(0) if self.plan else [{"name": names[0]}]
        if isinstance(step, BaseException):
            raise step
        return httpx.Response(200, json=step)


def _gate(client: FakeClient, name: str, scale: float = 0.01) -> PrefectRateGate:
    return PrefectRateGate(name, shared_rate_budget(time_scale=scale), client=client)


def test_the_limit_is_created_on_first_use_and_a_lost_race_is_fine() -> None:
    client = FakeClient(race=True)
    gate = _gate(client, "ib-pacing-race")
    gate.acquire(CancelToken())
    gate.acquire(CancelToken())
    assert len(client.created) == 1  # created once, then known
    create = client.created[0]
    assert (create.name, create.limit) == ("ib-pacing-race", 30 * SLOTS_PER_REQUEST)
    assert create.slot_decay_per_second == pytest.approx(gate.budget.rate * SLOTS_PER_REQUEST)
    assert (gate.acquired, client.increments, gate.open_reason) == (2, 2, None)


def test_a_refused_attempt_waits_the_servers_retry_after_then_goes() -> None:
    client = FakeClient()
    client.plan = [_status(423, **{"Retry-After": "0.01"}), _status(423, **{"Retry-After": "0.02"})]
    gate = _gate(client, "ib-pacing-retry")
    gate.acquire(None)
    assert (gate.acquired, client.increments) == (1, 3)
    assert gate.waited == pytest.approx(0.03)


def test_a_busy_api_is_retried_at_once_not_after_prefects_seconds_of_backoff() -> None:
    client = FakeClient()
    client.plan = [_status(503), _status(503)]  # the SQLite API's "database is locked", twice
    gate = _gate(client, "ib-pacing-busy", scale=1.0)
    gate.acquire(CancelToken())
    assert (gate.acquired, client.increments, gate.busy_answers) == (1, 3, 2)
    assert gate.open_reason is None  # a busy moment is no reason to stop sharing the pacing
    assert gate.waited == 0.0  # not a wait for a slot


def test_a_dropped_connection_is_retried_not_a_reason_to_stop_sharing() -> None:
    client = FakeClient()
    gate = _gate(client, "ib-pacing-dropped", scale=1.0)
    gate.acquire(CancelToken())  # the API has answered
    client.plan = [httpx.ReadError("connection reset"), httpx.RemoteProtocolError("closed")]
    gate.acquire(CancelToken())
    assert (gate.acquired, client.increments, gate.open_reason) == (2, 4, None)


def test_transport_failures_that_go_on_open_the_gate(monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks import pacing

    monkeypatch.setattr(pacing, "busy_delay", lambda in_a_row, rng: 0.0)
    client = FakeClient()
    gate = _gate(client, "ib-pacing-gone", scale=1.0)
    gate.acquire(None)
    client.plan = [httpx.ConnectError("refused")] * (pacing.TRANSPORT_RETRIES + 1)
    gate.acquire(None)
    assert gate.open_reason is not None and "no Prefect API answers" in gate.open_reason
    assert client.increments == 1 + pacing.TRANSPORT_RETRIES + 1


def test_busy_retries_start_short_and_double_up_to_a_second() -> None:
    rng = random.Random(7)
    for in_a_row in range(12):
        base = min(0.05 * 2**in_a_row, 1.0)
        delays = [busy_delay(in_a_row, rng) for _ in range(200)]
        assert all(0.5 * base <= d <= 1.5 * base for d in delays), in_a_row
        assert max(delays) > base and min(delays) < base  # jittered around it


class _BusyAPI(http.server.BaseHTTPRequestHandler):
    """A Prefect API on loopback whose increments answer 503 ``busy`` times, then grant."""

    busy = 2
    increments = 0
    decay = 0.0  # the limit's slot decay (the gate's own: no warning about it)

    def do_GET(self) -> None:
        if self.path.startswith("/api/csrf-token"):
            self._answer(422, {"detail": "CSRF protection is disabled."})
        else:  # the limit, as created by the gate (30 requests, decaying)
            name = self.path.rsplit("/", 1)[-1]
            limit = {"id": str(uuid.uuid4()), "name": name, "limit": 3000, "active": True,
                     "slot_decay_per_second": self.decay, "active_slots": 0,
                     "denied_slots": 0, "avg_slot_occupancy_seconds": 2.0,
                     "created": None, "updated": None}  # fmt: skip
            self._answer(200, limit)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).increments += 1
        if type(self).increments <= type(self).busy:
            self._answer(503, {"exception_message": "Service Unavailable"})
        else:
            self._answer(200, [{"id": str(uuid.uuid4()), "name": "x", "limit": 3000}])

    def _answer(self, code: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_the_default_client_hands_busy_answers_to_the_gate_instead_of_retrying_itself() -> None:
    from prefect.settings import PREFECT_API_URL, PREFECT_CLIENT_MAX_RETRIES, temporary_settings

    _BusyAPI.increments = 0
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _BusyAPI)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/api"
    try:
        with temporary_settings(updates={PREFECT_API_URL: url}):
            with client_without_retries():
                assert PREFECT_CLIENT_MAX_RETRIES.value() == 0
            assert PREFECT_CLIENT_MAX_RETRIES.value() > 0  # only the gate's requests
            gate = PrefectRateGate("ib-pacing-busy-api", shared_rate_budget(time_scale=1.0))
            _BusyAPI.decay = gate.decay_slots
            gate.acquire(CancelToken())
    finally:
        server.shutdown()
        server.server_close()
    # Each 503 reached the gate (Prefect's client would have retried it, 2 s later, unseen).
    assert (_BusyAPI.increments, gate.busy_answers, gate.acquired) == (3, 2, 1)
    assert gate.open_reason is None


def test_a_cancel_interrupts_the_wait_for_a_slot() -> None:
    client = FakeClient()
    client.plan = [_status(423, **{"Retry-After": "600"})]
    gate = _gate(client, "ib-pacing-cancel", scale=1.0)
    token = CancelToken()
    acquire = Running(lambda: gate.acquire(token))
    assert client.attempted.wait(60)
    token.cancel("stop now")
    with pytest.raises(Cancelled):
        acquire.result(60, "the wait for a slot")
    assert (gate.acquired, client.increments) == (0, 1)


def test_a_limit_deleted_meanwhile_is_created_again() -> None:
    client = FakeClient()
    gate = _gate(client, "ib-pacing-vanish")
    gate.acquire(None)
    client.limit = None
    client.plan = [[]]  # the server answers "no such limit" once
    gate.acquire(None)
    assert len(client.created) == 2 and gate.acquired == 2


def test_no_api_opens_the_gate_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    client = FakeClient()
    client.plan = [httpx.ConnectError("connection refused")]
    caplog.set_level(logging.WARNING, logger="tasks.pacing")
    first, second = _gate(client, "ib-pacing-down"), _gate(client, "ib-pacing-down")
    first.acquire(None)
    first.acquire(None)
    client.plan = [httpx.ConnectError("connection refused")]
    second.acquire(None)
    assert first.open_reason is not None and "no Prefect API answers" in first.open_reason
    assert second.open_reason is not None
    warnings = [r for r in caplog.records if "ib-pacing-down" in r.getMessage()]
    assert len(warnings) == 1 and "paces only its own requests" in warnings[0].getMessage()
    assert client.increments == 2  # an open gate asks the API nothing more


def test_a_limit_without_decay_cannot_pace_and_opens_the_gate(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = FakeClient(exists=FakeLimit(3000, 0.0))
    caplog.set_level(logging.WARNING, logger="tasks.pacing")
    gate = _gate(client, "ib-pacing-nodecay")
    gate.acquire(None)
    assert gate.open_reason is not None and "no slot decay" in gate.open_reason
    assert "prefect gcl delete ib-pacing-nodecay" in caplog.text
    assert client.increments == 0


def test_an_existing_limit_that_allows_too_much_is_used_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # 60 requests at once, then one every 10 s (scale 1): the counter-example above.
    client = FakeClient(exists=FakeLimit(60 * SLOTS_PER_REQUEST, 0.1 * SLOTS_PER_REQUEST))
    caplog.set_level(logging.WARNING, logger="tasks.pacing")
    gate = _gate(client, "ib-pacing-unsafe", scale=1.0)
    gate.acquire(None)
    assert gate.acquired == 1 and client.created == []
    assert "more than the 60 IB allows" in caplog.text


def test_limit_names_follow_the_gateway_and_the_time_scale() -> None:
    assert pacing_limit_name("127.0.0.1", 4002) == "ib-pacing-127.0.0.1-4002"
    assert pacing_limit_name("127.0.0.1", 4002, 0.02) == "ib-pacing-127.0.0.1-4002-x0.02"
    assert pacing_limit_name("gw/1", 7497) == "ib-pacing-gw_1-7497"


def test_the_gate_applies_to_ib_inside_runs_and_is_switchable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert ib_request_gate("synthetic", "127.0.0.1", 4002) is None
    assert ib_request_gate("ib", "127.0.0.1", 4002, -1.0) is None  # make_source names the error
    monkeypatch.delenv(SHARED_PACING_ENV, raising=False)
    assert ib_request_gate("ib", "127.0.0.1", 4002) is OPEN_GATE  # not inside a flow run
    monkeypatch.setenv(SHARED_PACING_ENV, "off")
    assert ib_request_gate(" IB ", "127.0.0.1", 4002) is OPEN_GATE
    monkeypatch.setenv(SHARED_PACING_ENV, "sometimes")
    with pytest.raises(InvalidRequest, match=f"{SHARED_PACING_ENV}='sometimes'"):
        ib_request_gate("ib", "127.0.0.1", 4002)
