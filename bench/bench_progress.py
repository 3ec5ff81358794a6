"""Benchmark of the progress hot path: nanoseconds per ``Span.advance`` with a ListSink attached.

The budget (DESIGN §3) is under 1 µs per call on CPython 3.11, so hot loops can report every item.
Run ``python bench/bench_progress.py`` or ``python -m bench.bench_progress``.
"""

from __future__ import annotations

import threading
import time

from candleflow.progress import ListSink, ProgressTracker

CALLS = 1_000_000
THREADS = 8
BUDGET_NS = 1_000.0


def time_advance(calls: int, detail: str | None = None, repeats: int = 3) -> tuple[float, int]:
    """Best ns per ``advance(1)`` over ``repeats`` runs, and the events the last run emitted."""
    best = float("inf")
    events = 0
    for _ in range(repeats):
        sink = ListSink()
        tracker = ProgressTracker("bench", [sink], stages=[("loop", 1)])
        with tracker.stage("loop", total=calls) as span:
            advance = span.advance
            start = time.perf_counter_ns()
            if detail is None:
                for _ in range(calls):
                    advance(1)
            else:
                for _ in range(calls):
                    advance(1, detail)
            elapsed = time.perf_counter_ns() - start
        tracker.complete()
        best = min(best, elapsed / calls)
        events = len(sink.events)
    return best, events


def time_empty_loop(calls: int) -> float:
    """ns per iteration of the bare loop, so the overhead of the call itself can be read off."""
    start = time.perf_counter_ns()
    for _ in range(calls):
        pass
    return (time.perf_counter_ns() - start) / calls


def time_threaded_advance(calls_per_thread: int, threads: int) -> float:
    """Wall-clock ns per ``advance(1)`` with ``threads`` threads advancing one span."""
    tracker = ProgressTracker("bench threads", [ListSink()], stages=[("loop", 1)])
    barrier = threading.Barrier(threads + 1)

    with tracker.stage("loop", total=calls_per_thread * threads) as span:

        def work() -> None:
            barrier.wait()
            for _ in range(calls_per_thread):
                span.advance(1)

        workers = [threading.Thread(target=work) for _ in range(threads)]
        for worker in workers:
            worker.start()
        barrier.wait()
        start = time.perf_counter_ns()
        for worker in workers:
            worker.join()
        elapsed = time.perf_counter_ns() - start
    if span.done != calls_per_thread * threads:
        raise RuntimeError(f"lost items: {span.done} != {calls_per_thread * threads}")
    return elapsed / (calls_per_thread * threads)


def time_rich_advance(calls: int) -> float:
    """Peer: rich's own ``Progress.advance`` (the usual way to report from a hot loop)."""
    import io

    from rich.console import Console
    from rich.progress import Progress

    console = Console(file=io.StringIO(), force_terminal=False)
    with Progress(console=console, auto_refresh=False) as progress:
        task = progress.add_task("bench", total=calls)
        advance = progress.advance
        start = time.perf_counter()
        for _ in range(calls):
            advance(task, 1)
        return (time.perf_counter() - start) / calls * 1e9


def main() -> None:
    per_call, events = time_advance(CALLS)
    with_detail, _ = time_advance(CALLS, detail="Candle chunk")
    loop = time_empty_loop(CALLS)
    threaded = time_threaded_advance(CALLS // THREADS, THREADS)
    rich_ns = time_rich_advance(CALLS // 4)
    verdict = "ok" if per_call < BUDGET_NS else "OVER BUDGET"
    print(f"advance(1):          {per_call:7.1f} ns per advance ({events} events) [{verdict}]")
    print(f"advance(1, detail):  {with_detail:7.1f} ns per advance")
    print(f"empty loop:          {loop:7.1f} ns per iteration")
    print(f"{THREADS} threads advance:  {threaded:7.1f} ns per advance (wall clock, all threads)")
    print(f"peer rich Progress.advance: {rich_ns:7.1f} ns per call")
    print(f"ratio rich / candleflow:    {rich_ns / per_call:7.2f}x")


if __name__ == "__main__":
    main()
