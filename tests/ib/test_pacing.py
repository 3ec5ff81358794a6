"""IB pacing rules: the limiter waits exactly as long as the rules need; the judge agrees."""

from __future__ import annotations

import functools
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from candleflow.errors import Cancelled, InvalidRequest
from candleflow.progress import CancelToken
from candleflow.sources.pacing import (
    IB_PACING,
    PacingJudge,
    PacingLimiter,
    PacingRules,
    RequestKey,
    shared_limiter,
)
from tests.ib.conftest import FakeClock, WaitSignallingClock, cancel_once_waiting
from tests.timing import run_in_threads


def _key(contract: str = "AAPL", params: str = "", what: str = "TRADES") -> RequestKey:
    return RequestKey(contract, "SMART", what, params)


def test_sixty_distinct_requests_pass_and_the_61st_waits_for_the_window() -> None:
    clock = FakeClock()
    limiter = PacingLimiter(
        PacingRules(max_same_series=1000), margin=0.0, clock=clock
    )  # only the 60/600 s rule
    start = clock.t
    for i in range(60):
        limiter.acquire(_key(params=str(i))).release()
    assert clock.t == start
    limiter.acquire(_key(params="60")).release()
    assert clock.t == pytest.approx(start + 600.0)


def test_the_same_contract_gets_five_requests_per_two_seconds() -> None:
    clock = FakeClock()
    limiter = PacingLimiter(margin=0.0, clock=clock)
    times = [limiter.acquire(_key(params=str(i))).sent_at - 1000.0 for i in range(11)]
    assert times == pytest.approx([0, 0, 0, 0, 0, 2, 2, 2, 2, 2, 4])
    # Another contract is not held back by AAPL's window.
    assert limiter.acquire(_key("MSFT")).sent_at == pytest.approx(clock.t)


def test_an_identical_request_waits_fifteen_seconds_scaled() -> None:
    clock = FakeClock()
    limiter = PacingLimiter(time_scale=0.01, margin=0.0, clock=clock)
    first = limiter.acquire(_key(params="same")).sent_at
    second = limiter.acquire(_key(params="same")).sent_at
    assert second - first == pytest.approx(0.15)


def test_bid_ask_counts_twice() -> None:
    clock = FakeClock()
    limiter = PacingLimiter(margin=0.0, clock=clock)
    times = [limiter.acquire(_key(params=str(i), what="BID_ASK")).sent_at for i in range(3)]
    # Two BID_ASK requests weigh 4 of the 5 allowed in 2 s: the third must wait.
    assert times[1] == times[0]
    assert times[2] == pytest.approx(times[0] + 2.0)
    judge = PacingJudge()
    assert judge.judge(_key(params="a", what="BID_ASK"), now=0.0) is None
    assert judge.judge(_key(params="b", what="BID_ASK"), now=0.0) is None
    assert judge.judge(_key(params="c", what="BID_ASK"), now=0.0) is not None


def test_the_margin_lengthens_every_window_in_real_seconds() -> None:
    clock = FakeClock()
    limiter = PacingLimiter(time_scale=0.01, margin=0.1, clock=clock)
    first = limiter.acquire(_key(params="x")).sent_at
    assert limiter.acquire(_key(params="x")).sent_at - first == pytest.approx(0.25)


def test_the_judge_names_the_rule_a_request_breaks() -> None:
    judge = PacingJudge(time_scale=1.0)
    assert judge.judge(_key(params="p"), now=0.0) is None
    assert "identical" in (judge.judge(_key(params="p"), now=14.9) or "")
    assert judge.judge(_key(params="p"), now=15.0) is None
    for i in range(4):
        assert judge.judge(_key(params=str(i)), now=16.0) is None
    assert "within 2 s" in (judge.judge(_key(params="q"), now=16.5) or "")
    assert judge.violations == 2


def test_open_requests_are_capped_and_a_release_lets_the_next_one_in() -> None:
    rules = PacingRules(max_open=2, max_same_series=100)
    limiter = PacingLimiter(rules, margin=0.0, clock=FakeClock())
    first = limiter.acquire(_key(params="1"))
    limiter.acquire(_key(params="2"))
    got: list[int] = []
    thread = threading.Thread(target=lambda: got.append(limiter.acquire(_key(params="3")).sent_at))
    thread.start()
    thread.join(0.2)
    assert got == [] and thread.is_alive()
    first.release()
    thread.join(5)
    assert len(got) == 1
    assert limiter.open_requests == 2


def test_a_cancelled_token_interrupts_the_wait() -> None:
    clock = WaitSignallingClock()
    limiter = PacingLimiter(time_scale=1.0, clock=clock)
    token = CancelToken()
    for i in range(5):
        limiter.acquire(_key(params=str(i)), token)
    cancel_once_waiting(clock, token, "stop")  # the sixth request waits for the 2 s window
    with pytest.raises(Cancelled, match="stop"):
        limiter.acquire(_key(params="5"), token)
    assert clock.waiting.is_set()
    # The wait was cut short: a wait that ran its course is added to `waited` before the token
    # is checked again.
    assert limiter.waited == 0.0 and limiter.acquired == 5


def test_shared_limiters_are_one_per_name_and_refuse_other_settings() -> None:
    a = shared_limiter("tests/ib/shared", time_scale=0.5)
    assert shared_limiter("tests/ib/shared", time_scale=0.5) is a
    assert shared_limiter("tests/ib/other") is not a
    with pytest.raises(InvalidRequest, match="same rules"):
        shared_limiter("tests/ib/shared", time_scale=1.0)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(InvalidRequest):
        PacingLimiter(time_scale=0)
    with pytest.raises(InvalidRequest):
        PacingRules(max_requests=0)


_SMALL_RULES = PacingRules(
    max_requests=7, window=10.0, identical_window=3.0, max_same_series=3, same_series_window=1.0
)


@settings(max_examples=150, deadline=None)
@given(
    rules=st.sampled_from([IB_PACING, _SMALL_RULES]),
    time_scale=st.sampled_from([1.0, 0.01, 0.37]),
    calls=st.lists(
        st.tuples(
            st.integers(0, 2),  # contract
            st.sampled_from(["TRADES", "BID_ASK", "MIDPOINT"]),
            st.integers(0, 3),  # params: small range so identical requests happen
            st.floats(0.0, 5.0),  # idle time before the call
        ),
        max_size=120,
    ),
)
def test_any_sequence_of_acquires_is_a_schedule_the_judge_accepts(
    rules: PacingRules, time_scale: float, calls: list[tuple[int, str, int, float]]
) -> None:
    clock = FakeClock()
    limiter = PacingLimiter(rules, time_scale=time_scale, margin=0.0, clock=clock)
    judge = PacingJudge(rules, time_scale=time_scale)
    for contract, what, params, idle in calls:
        clock.t += idle * time_scale
        key = RequestKey(f"C{contract}", "SMART", what, str(params))
        with limiter.acquire(key) as permit:
            assert judge.judge(key, now=permit.sent_at) is None
            judge.finish()
    assert judge.violations == 0
    assert limiter.acquired == len(calls)


def test_threads_sharing_a_limiter_in_real_time_never_violate() -> None:
    limiter = PacingLimiter(time_scale=0.002, margin=0.1)
    judge = PacingJudge(time_scale=0.002)

    def worker(n: int) -> None:
        for i in range(25):
            key = RequestKey(f"C{n % 2}", "SMART", "TRADES", f"{n}-{i % 6}")
            with limiter.acquire(key):
                assert judge.judge(key) is None
                judge.finish()

    run_in_threads(functools.partial(worker, n) for n in range(4))
    assert judge.violations == 0
    assert limiter.acquired == 100
