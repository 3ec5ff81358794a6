"""ETA accuracy on runs with known constant rates (issue 11: within 20 % of the true remaining
time from 10 % done on).

Each run drives a real :class:`~candleflow.progress.ProgressTracker` on a fake clock, shaped like
the product's runs — a load (short stages, then segments that finish in steps, then merge and
save), an optimization (iterations whose candles advance in chunks, then a report), a backfill
(rows advancing together) — at a constant rate each, so the true remaining time at every event
is known. It prints, per run, the worst relative error of the ETA over the events from 10 % to
90 % of the run (past that the remaining time is seconds, where a relative error says little;
the tail's worst absolute error is printed as a share of the run), and when the first ETA came.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from candleflow.loading.pipeline import stage_plan
from candleflow.models import LoadMode
from candleflow.progress import ListSink, ProgressEvent, ProgressTracker

__all__ = ["EtaResult", "main", "measure"]

GOAL = 0.20


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def tick(self, dt: float) -> None:
        self.now += dt


@dataclass(frozen=True, slots=True)
class EtaResult:
    name: str
    duration: float
    worst_relative: float  # over 10–90 % of the run
    worst_tail: float  # absolute error after 90 %, as a share of the run
    first_eta_at: float  # share of the run when the first ETA was shown

    @property
    def ok(self) -> bool:
        return self.worst_relative <= GOAL and self.worst_tail <= GOAL


def _load(clock: FakeClock, tracker: ProgressTracker, segments: int, seconds: float) -> None:
    plan = dict(stage_plan(LoadMode.FULL))
    for name in ("validate_symbol", "check_head_timestamp", "load_local", "analyze_gaps",
                 "plan_segments"):  # fmt: skip
        with tracker.stage(name, weight=plan[name]):
            clock.tick(0.05)
    with tracker.stage("fetch_segments", weight=plan["fetch_segments"], total=segments) as span:
        for i in range(segments):
            for _ in range(int(seconds / 0.25)):  # the throttle's cadence while a request waits
                clock.tick(0.25)
                span.update(detail=f"Segment {i + 1}/{segments}")
            span.advance(1)
    for name, dt in (("merge_bars", 0.1), ("save_bars", 0.2)):
        with tracker.stage(name, weight=plan[name]):
            clock.tick(dt)


def _optimize(clock: FakeClock, tracker: ProgressTracker, iterations: int, chunks: int) -> None:
    with tracker.stage("read_bars", weight=2):
        clock.tick(0.2)
    with tracker.stage("optimize", weight=95, total=iterations, unit="Iteration") as span:
        for _ in range(iterations):
            with span.child("backtest", total=chunks * 1000, unit="Candle") as candles:
                for _ in range(chunks):
                    clock.tick(0.1)
                    candles.advance(1000)
    with tracker.stage("report", weight=3):
        clock.tick(1.0)


def _backfill(clock: FakeClock, tracker: ProgressTracker, series: int, seconds: float) -> None:
    with tracker.stage("backfill", weight=1, total=series, unit="Series") as span:
        rows = [span.child(f"row {i}", total=1000, weight=1) for i in range(series)]
        parallel = 4
        for first in range(0, series, parallel):
            batch = rows[first : first + parallel]
            for row in batch:
                row.__enter__()
            steps = int(seconds / 0.25)
            for step in range(steps):
                clock.tick(0.25)
                for row in batch:
                    row.update(done=1000 * (step + 1) // steps)
            for row in batch:
                row.__exit__(None, None, None)


_Run = Callable[[FakeClock, ProgressTracker], None]
_LOAD = stage_plan(LoadMode.FULL)
_OPTIMIZE = [("read_bars", 2.0), ("optimize", 95.0), ("report", 3.0)]
#: name → (stage plan, run, share of the run when its first item is done: no rate before it).
RUNS: dict[str, tuple[list[tuple[str, float]], _Run, float]] = {
    "load, 40 segments × 2 s": (_LOAD, lambda c, t: _load(c, t, 40, 2.0), 1 / 40),
    "load, 8 segments × 5 s": (_LOAD, lambda c, t: _load(c, t, 8, 5.0), 1 / 8),
    "optimize, 50 iterations × 1 s": (_OPTIMIZE, lambda c, t: _optimize(c, t, 50, 10), 0.02),
    "backfill, 12 series × 6 s, 4 at once": ([("backfill", 1.0)],
                                             lambda c, t: _backfill(c, t, 12, 6.0), 0.02),
}  # fmt: skip


def measure(
    name: str, stages: list[tuple[str, float]], run: _Run, first_item: float = 0.0
) -> EtaResult:
    """Run ``run`` on a fake clock and compare each event's ETA with the true remaining time;
    no ETA by 10 % done (or by the first item done, when that comes later) counts as a miss."""
    clock = FakeClock()
    sink = ListSink()
    tracker = ProgressTracker(name, [sink], stages=stages, clock=clock)
    run(clock, tracker)
    tracker.complete()
    duration = clock.now
    events: list[ProgressEvent] = sink.events
    worst = tail = 0.0
    first = 1.0
    for event in events:
        share = event.elapsed / duration
        if event.eta is None or event.done:
            continue
        first = min(first, share)
        truth = duration - event.elapsed
        if 0.1 <= share <= 0.9:
            worst = max(worst, abs(event.eta - truth) / truth)
        elif share > 0.9:
            tail = max(tail, abs(event.eta - truth) / duration)
    if first > max(0.1, first_item + 0.02):  # the pre-stages and a throttle tick
        worst = max(worst, 1.0)
    return EtaResult(name, duration, worst, tail, first)


def main() -> None:
    results = [measure(name, *spec) for name, spec in RUNS.items()]
    width = max(len(r.name) for r in results)
    print(f"{'run':<{width}}  duration  worst 10–90 %  tail/run  first ETA at  ok (goal ≤ 20 %)")
    for r in results:
        print(
            f"{r.name:<{width}}  {r.duration:7.1f}s  {r.worst_relative:12.1%}  "
            f"{r.worst_tail:8.1%}  {r.first_eta_at:11.1%}  {'yes' if r.ok else 'NO'}"
        )


if __name__ == "__main__":
    main()
