"""Bayesian search overhead and result quality (issue 15): 200 iterations of SMA-cross on EURUSD
1h bars (backtesting.py's sample, 5,000 bars; synthetic 1h bars when backtesting.py is missing),
over the default space ``fast=5:50,slow=10:200``, by Sharpe, 5 seeds, in rounds of 16 points
(the optimize flow's default: batch_size 8 × concurrency 2).

Compared in the same run, on the same budget:

* **before** — the search as it was before issue 15: skopt's ``Optimizer`` (GP or forest, 10
  initial points, 1,000 sampled candidates), ``ask(n_points=16)`` with its constant liar
  refitting the model (the GP's hyperparameters too) for every point, reproduced with skopt;
* **gp** and **forest** — ``optimize(method="bayes")`` now (:mod:`candleflow.optimize.bayes`);
* **random** — ``optimize(method="random")``, whose time is the backtests' own: a method's
  *overhead per iteration* is its time minus random search's, over the iterations;
* **tpe** — Optuna's TPE sampler asked and told in the same rounds (when optuna is installed),
  to decide whether it earns a ``--method``;
* **1/round** — the forest before and now, and random search, asking one point a round (a run
  with ``--batch-size 1 --concurrency 1``), where the forest used to be refitted for every point.

Prints each method's wall time, time and overhead per iteration, best Sharpe per seed and mean,
and the ratios before / now. ``CANDLEFLOW_BENCH_QUICK=1`` runs 24 iterations on 2 seeds (a smoke
run for tests). Run ``python -m bench bayes``.
"""

from __future__ import annotations

import math
import os
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from candleflow.backtest import get_strategy
from candleflow.optimize.evaluate import BatchEvaluator, objective_value
from candleflow.optimize.search import optimize
from candleflow.optimize.space import default_space, skopt_space

__all__ = ["Run", "main", "measure"]

ROUND = 16  # points per ask: the flow's batch_size 8 × concurrency 2
GOAL_MS = 20.0


@dataclass(frozen=True, slots=True)
class Run:
    method: str
    seed: int
    seconds: float
    best: float
    iterations: int


def _budget() -> tuple[int, int]:
    quick = os.environ.get("CANDLEFLOW_BENCH_QUICK", "").strip() not in ("", "0")
    return (24, 2) if quick else (200, 5)


def bars_1h() -> tuple[pd.DataFrame, str]:
    """EURUSD 1h from backtesting.py's samples, or synthetic 1h bars of the same length."""
    try:
        from bench.bench_backtest import eurusd

        return eurusd(), "EURUSD 1h (backtesting.py sample)"
    except ImportError:
        rng = np.random.default_rng(0)
        close = 1.1 * np.exp(np.cumsum(rng.normal(0.0, 0.0015, 5000)))
        open_ = np.concatenate(([close[0]], close[:-1]))
        index = pd.date_range("2017-01-02", periods=5000, freq="1h", tz="UTC", name="timestamp")
        frame = pd.DataFrame(
            {"open": open_, "high": np.maximum(open_, close), "low": np.minimum(open_, close),
             "close": close, "volume": 1.0},
            index=index,
        )  # fmt: skip
        return frame, "synthetic EURUSD-like 1h (backtesting.py not installed)"


def _today(
    bars: pd.DataFrame, iterations: int, seed: int, estimator: str = "GP", round_: int = ROUND
) -> float:
    """The pre-issue-15 Bayesian search: skopt's GP (or forest, "RF"), 1,000 sampled candidates,
    ask(n_points) with the constant liar refitting the model per point; infeasible points told
    at the worst value seen."""
    from skopt import Optimizer  # type: ignore[import-untyped]
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

    spec = get_strategy("sma_cross")
    dims = default_space(spec)
    sk_dims, decode = skopt_space(dims)
    evaluate = BatchEvaluator(bars, spec)
    optimizer = Optimizer(
        sk_dims, base_estimator=estimator, n_initial_points=10, random_state=seed, acq_func="EI",
        acq_optimizer="sampling", acq_optimizer_kwargs={"n_points": 1000},
    )  # fmt: skip
    best, done, worst = -math.inf, 0, 0.0
    memo: dict[tuple[Any, ...], float] = {}
    with threadpool_limits(limits=1, user_api="blas"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        while done < iterations:
            n = min(round_, iterations - done)
            xs = optimizer.ask(n_points=n) if n > 1 else [optimizer.ask()]
            ys: list[float] = []
            for x in xs:
                try:
                    params = spec.resolve(decode(x))
                except Exception:  # infeasible (fast >= slow)
                    ys.append(math.nan)
                    continue
                key = tuple(sorted(params.items()))
                if key not in memo:
                    memo[key] = objective_value(evaluate([params])[0], "sharpe")
                done += 1
                value = memo[key]
                best = max(best, value) if math.isfinite(value) else best
                ys.append(-value if math.isfinite(value) else math.nan)
            finite = [y for y in ys if math.isfinite(y)]
            worst = max([worst, *finite]) if finite else worst
            optimizer.tell([list(x) for x in xs], [worst if math.isnan(y) else y for y in ys])
    return best


def _tpe(bars: pd.DataFrame, iterations: int, seed: int) -> float:
    """Optuna's TPE in rounds of ROUND asks then tells; infeasible points pruned as failures."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = get_strategy("sma_cross")
    evaluate = BatchEvaluator(bars, spec)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    best, done = -math.inf, 0
    while done < iterations:
        trials = [study.ask() for _ in range(min(ROUND, iterations - done))]
        for trial in trials:
            point = {"fast": trial.suggest_int("fast", 5, 50),
                     "slow": trial.suggest_int("slow", 10, 200)}  # fmt: skip
            try:
                params = spec.resolve(point)
            except Exception:
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
                continue
            value = objective_value(evaluate([params])[0], "sharpe")
            done += 1
            if math.isfinite(value):
                best = max(best, value)
                study.tell(trial, value)
            else:
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
    return best


def _ours(
    method: str, estimator: str = "gp", round_: int = ROUND
) -> Callable[[pd.DataFrame, int, int], float]:
    def run(bars: pd.DataFrame, iterations: int, seed: int) -> float:
        result = optimize(
            bars, "sma_cross", default_space("sma_cross"), method=method,  # type: ignore[arg-type]
            iterations=iterations, seed=seed, batch_size=round_, base_estimator=estimator,
        )  # fmt: skip
        return result.best.objective if result.best is not None else math.nan

    return run


def measure(iterations: int, seeds: int) -> tuple[str, dict[str, list[Run]]]:
    """Every method on every seed, timed; the bars' description and the runs by method."""
    bars, what = bars_1h()
    methods: dict[str, Callable[[pd.DataFrame, int, int], float]] = {
        "random": _ours("random"),
        "gp": _ours("bayes", "gp"),
        "forest": _ours("bayes", "forest"),
        "today": _today,
        "forest_today": lambda b, i, s: _today(b, i, s, "RF"),
        # One point a round (--batch-size 1 --concurrency 1): a forest refit per point before.
        "random_1": _ours("random", round_=1),
        "forest_1": _ours("bayes", "forest", round_=1),
        "forest_today_1": lambda b, i, s: _today(b, i, s, "RF", round_=1),
    }
    try:
        import optuna  # noqa: F401

        methods["tpe"] = _tpe
    except ImportError:
        pass
    _ours("random")(bars, 4, 0)  # compile the kernel and import skopt outside the timings
    _ours("bayes")(bars, 4, 0)
    runs: dict[str, list[Run]] = {name: [] for name in methods}
    for seed in range(seeds):
        for name, fn in methods.items():
            started = time.perf_counter()
            best = fn(bars, iterations, seed)
            runs[name].append(Run(name, seed, time.perf_counter() - started, best, iterations))
    return what, runs


def main() -> None:
    iterations, seeds = _budget()
    what, runs = measure(iterations, seeds)
    base = statistics.mean(r.seconds for r in runs["random"])
    print(f"work: {iterations} iterations of sma_cross on {what}, space fast=5:50,slow=10:200, "
          f"by sharpe, rounds of {ROUND}, {seeds} seeds")  # fmt: skip
    label = {"today": "bayes gp before (skopt liar)", "gp": "bayes gp now",
             "forest_today": "bayes forest before", "forest": "bayes forest now",
             "random": "random", "tpe": "optuna tpe",
             "forest_today_1": "1/round: forest before", "forest_1": "1/round: forest now",
             "random_1": "1/round: random"}  # fmt: skip
    seeds_head = " ".join(f"seed {s:<3d}" for s in range(seeds))
    print(f"{'method':<30} {'time':>8} {'ms/iter':>8} {'overhead':>9}  {seeds_head}  mean best")
    base_1 = statistics.mean(r.seconds for r in runs["random_1"])
    order = ("today", "gp", "forest_today", "forest", "random", "tpe", "forest_today_1",
             "forest_1", "random_1")  # fmt: skip
    for name in order:
        if name not in runs:
            continue
        rs = runs[name]
        seconds = statistics.mean(r.seconds for r in rs)
        per = 1000 * seconds / iterations
        over = 1000 * (seconds - (base_1 if name.endswith("_1") else base)) / iterations
        bests = " ".join(f"{r.best:8.4f}" for r in rs)
        mean = statistics.mean(r.best for r in rs)
        print(f"{label[name]:<30} {seconds:7.2f}s {per:8.2f} {over:8.2f}ms  {bests}  {mean:9.4f}")
    mean_best = {n: statistics.mean(r.best for r in rs) for n, rs in runs.items()}
    mean_time = {n: statistics.mean(r.seconds for r in rs) for n, rs in runs.items()}
    pairs = (("gp", "today", "random"), ("forest", "forest_today", "random"),
             ("forest_1", "forest_today_1", "random_1"))  # fmt: skip
    for now, before, rnd in pairs:
        over = 1000 * (mean_time[now] - mean_time[rnd]) / iterations
        met = "met" if over <= GOAL_MS else "NOT met"
        print(
            f"{now}: time before/now {mean_time[before] / mean_time[now]:6.1f}x · overhead "
            f"{over:.2f} ms/iteration (goal ≤ {GOAL_MS:g}: {met})"
            f" · mean best sharpe now − before {mean_best[now] - mean_best[before]:+.4f}, "
            f"now − random {mean_best[now] - mean_best[rnd]:+.4f}"
        )
    if "tpe" in runs:
        faster = mean_time["tpe"] < mean_time["gp"]
        better = mean_best["tpe"] > mean_best["gp"]
        print(
            f"tpe vs gp now: time {mean_time['tpe'] / mean_time['gp']:.2f}x, mean best "
            f"{mean_best['tpe'] - mean_best['gp']:+.4f} → "
            f"{'better on both' if faster and better else 'not better on both'}"
        )


if __name__ == "__main__":
    main()
