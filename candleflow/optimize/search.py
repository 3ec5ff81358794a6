"""Parameter search for a strategy: grid, random and Bayesian (scikit-optimize ask/tell).

:func:`optimize` evaluates parameter sets in batches through an ``evaluate_batch`` callable
(default: in-process, sharing one :class:`~candleflow.backtest.IndicatorCache` so each indicator
window is computed once per search; a Prefect flow passes one that fans batches out to tasks) and
keeps every :class:`Evaluation`. Rules:

* **Space** (:mod:`candleflow.optimize.space`): a mapping of parameter name → :class:`Integer`,
  :class:`Real` or :class:`Categorical` (a plain list/range is a Categorical); ``fixed``
  parameters are added to every set. The grid takes every Integer step, every Categorical value
  and ``grid_points`` values of a Real.
* **Constraints**: a point is *infeasible* when ``constraint(params)`` is False or the strategy
  rejects it (e.g. ``sma_cross`` with fast ≥ slow). Grid and random search skip infeasible points
  without evaluating or counting them (``result.infeasible`` counts them). Bayesian search tells
  skopt an infeasible point — and a point whose objective is not finite — at the worst objective
  seen so far (0 before any), so the model learns to avoid it without a backtest; it is not an
  iteration. (skopt's own ``space_constraint`` is not used: it forces rejection sampling through
  a Python callback for every acquisition candidate, seconds per ask.)
* **Iterations** count evaluated feasible points. Random search draws distinct points (stopping
  early when the space is exhausted); Bayesian search may propose a point twice, which is then
  answered from memory without a new backtest; the grid evaluates every feasible cell (the first
  ``iterations`` in grid order when given).
* **Objective** by name (:data:`OBJECTIVES`), always maximised (``max_drawdown`` is negated); a
  NaN objective ranks last; ties keep the earlier evaluation.
* **Split**: with ``split=0.7`` the search runs on the first 70 % of the bars and the top results
  are re-run on the remaining 30 % (starting flat; indicators are causal), reported side by side.
* **Batches**: ``batch_size`` points per ``evaluate_batch`` call (Bayesian search asks skopt for
  that many at once, constant-liar, with the cost rules of :mod:`candleflow.optimize.bayes`; the
  round that ends the random initial points is shorter), so a task runner can evaluate a batch
  per task in parallel; the default in-process evaluator runs them one after the other.
* **Progress**: given a tracker, a stage "optimize" counting iterations (unit "Iteration") whose
  backtests are candle child spans counted block by block as simulated
  (:mod:`candleflow.optimize.monitor`): "Iteration 5/50 · Candle 7,300/10,000" (given a span, an
  "optimize" child span instead). A :class:`~candleflow.optimize.monitor.Pulse` (``pulse``, or
  one of its own) keeps events coming at least every quarter second and names the stretches
  that are not backtests: "preparing the model", "choosing next points 3/16", "updating the
  model". **Cancellation** (the tracker's token, or ``cancel_token``) stops the running
  backtest at its next block and returns the best result so far with ``cancelled=True``; the
  cancel is announced at once (an event with ``cancelled=True`` at the figure reached), so a
  display freezes there; an external evaluator is checked between batches. Bayesian search
  also checks the token before and after each ask and tell and between the points of a batch,
  so a cancel waits for at most one model refit, not a whole batch of them.
* **Fused grid**: a grid of the built-in ``sma_cross`` evaluated in-process (no
  ``evaluate_batch``) runs through :class:`~candleflow.backtest.grid.SmaCrossGrid` — each SMA
  window once, then one compiled call per chunk of cells (``chunk_size // bars`` cells, at least
  one), with metrics equal to the per-cell path's. The iteration span advances per chunk (no
  candle child spans: a chunk is about a millisecond of work) and cancellation is checked
  between chunks; with a split, the top results
  are still re-run out of sample one by one.
* Everything is seeded by ``seed``: the same call gives the same evaluations in the same order.
"""

from __future__ import annotations

import contextlib
import logging
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import pandas as pd

from candleflow.backtest import (
    BacktestConfig,
    Metrics,
    PreparedBars,
    StrategySpec,
    get_strategy,
)
from candleflow.backtest.grid import SmaCrossGrid, is_sma_cross
from candleflow.backtest.strategies import ParamValue
from candleflow.errors import Cancelled, InvalidRequest
from candleflow.optimize.bayes import BayesModel, choosing
from candleflow.optimize.evaluate import (
    OBJECTIVES,
    BatchEvaluator,
    Params,
    evaluate_params,
    objective_field,
    objective_value,
)
from candleflow.optimize.monitor import Pulse
from candleflow.optimize.space import (
    Categorical,
    Dimension,
    Integer,
    Real,
    grid_points,
    normalise_space,
    random_point,
    skopt_space,
)
from candleflow.progress import CancelToken, ProgressTracker, Span

__all__ = [
    "OBJECTIVES",
    "BatchEvaluator",
    "Categorical",
    "Evaluation",
    "Integer",
    "OptimizationResult",
    "Real",
    "check_search",
    "evaluate_params",
    "objective_value",
    "optimize",
    "planned_iterations",
]

logger = logging.getLogger(__name__)

EvaluateBatch = Callable[[Sequence[Params]], Sequence[Metrics]]
Method = Literal["grid", "random", "bayes"]

_ESTIMATORS = {"gp": "GP", "forest": "RF", "rf": "RF", "et": "ET", "gbrt": "GBRT"}


@dataclass(frozen=True, slots=True)
class Evaluation:
    """One evaluated parameter set: in-sample metrics, objective, and out-of-sample metrics when
    the search used a split (filled for the top results)."""

    params: Mapping[str, ParamValue]
    metrics: Metrics
    objective: float
    out_of_sample: Metrics | None = None
    out_of_sample_objective: float | None = None


@dataclass(frozen=True, slots=True)
class OptimizationResult:
    """What a search found: ``evaluations`` in evaluation order, ``best`` (None if nothing was
    evaluated), the count of skipped infeasible points and whether it was cancelled."""

    method: str
    strategy: str
    objective: str
    evaluations: tuple[Evaluation, ...]
    best: Evaluation | None
    iterations: int
    infeasible: int
    cancelled: bool
    seed: int
    split_bar: int | None = None

    def top(self, n: int = 10) -> list[Evaluation]:
        """The ``n`` best evaluations, best first (stable: ties keep evaluation order)."""
        return sorted(self.evaluations, key=lambda e: -_rank(e.objective))[:n]

    def to_frame(self, n: int | None = None) -> pd.DataFrame:
        """A table of the best ``n`` (all when None): parameters, objective, metrics (and the
        out-of-sample objective and return when present)."""
        rows: list[dict[str, Any]] = []
        for evaluation in self.top(len(self.evaluations) if n is None else n):
            row: dict[str, Any] = dict(evaluation.params)
            row["objective"] = evaluation.objective
            row.update(evaluation.metrics.to_dict())
            if evaluation.out_of_sample is not None:
                row["oos_objective"] = evaluation.out_of_sample_objective
                row["oos_total_return"] = evaluation.out_of_sample.total_return
                row["oos_sharpe"] = evaluation.out_of_sample.sharpe
            rows.append(row)
        return pd.DataFrame(rows)


def _rank(value: float) -> float:
    return value if not math.isnan(value) else -math.inf


def check_search(
    method: str,
    iterations: int | None,
    objective: str,
    *,
    batch_size: int = 1,
    concurrency: int = 1,
    base_estimator: str = "gp",
) -> str:
    """Reject a search that cannot run, before any bars are read; returns skopt's estimator name.

    ``method`` is grid, random or bayes; ``iterations`` ≥ 1 (None only for a whole grid);
    ``objective`` one of :data:`OBJECTIVES`; ``batch_size`` (points per evaluator call) and
    ``concurrency`` (calls a caller's evaluator runs at once) ≥ 1; ``base_estimator`` gp or
    forest.
    """
    objective_field(objective)
    if method not in ("grid", "random", "bayes"):
        raise InvalidRequest(
            f"unknown method {method!r}: use grid, random or bayes", "method", method
        )
    if method != "grid" and iterations is None:
        raise InvalidRequest(f"method {method!r} needs a number of iterations", "iterations")
    for name, count in (("iterations", iterations), ("batch_size", batch_size),
                        ("concurrency", concurrency)):  # fmt: skip
        if count is not None and count < 1:
            raise InvalidRequest(f"{name}={count}: use ≥ 1", name, count)
    estimator = _ESTIMATORS.get(base_estimator.strip().lower())
    if estimator is None:
        raise InvalidRequest(
            f"unknown base_estimator {base_estimator!r}: use gp or forest",
            "base_estimator",
            base_estimator,
        )
    return estimator


def planned_iterations(
    method: str,
    iterations: int,
    space: Mapping[str, Dimension],
    strategy: str | StrategySpec,
    *,
    fixed: Mapping[str, object] | None = None,
    constraint: Callable[[Mapping[str, ParamValue]], bool] | None = None,
) -> int:
    """The iterations a search will count: ``iterations``, or for a grid its feasible cells (at
    most ``iterations``), by the same feasibility rule the grid search applies."""
    if method != "grid":
        return iterations
    feasible = _Feasibility(get_strategy(strategy), fixed or {}, constraint)
    count = 0
    for point in grid_points(space):
        if feasible.resolve(point) is not None:
            count += 1
            if count >= iterations:
                break
    return count


class _Feasibility:
    def __init__(
        self,
        spec: StrategySpec,
        fixed: Mapping[str, object],
        constraint: Callable[[Mapping[str, ParamValue]], bool] | None,
    ) -> None:
        self.spec = spec
        self.fixed = dict(fixed)
        self.constraint = constraint

    def resolve(self, point: Mapping[str, object]) -> Params | None:
        """The full parameter set, or None when the point is infeasible."""
        try:
            params = self.spec.resolve({**self.fixed, **point})
        except InvalidRequest:
            return None
        if self.constraint is not None and not self.constraint(params):
            return None
        return params


def _key(params: Mapping[str, ParamValue]) -> tuple[tuple[str, ParamValue], ...]:
    return tuple(sorted(params.items()))


class _Search:
    """Bookkeeping shared by the three methods: memo, best, progress, cancellation."""

    def __init__(
        self,
        evaluate: EvaluateBatch,
        objective: str,
        span: Span | None,
        external: bool,
        token: CancelToken | None,
        pulse: Pulse | None = None,
    ) -> None:
        self.evaluate = evaluate
        self.objective = objective
        self.span = span
        self.external = external
        self.token = token
        self.pulse = pulse
        self.evaluations: list[Evaluation] = []
        self.memo: dict[tuple[tuple[str, ParamValue], ...], Evaluation] = {}
        self.cancelled = False

    def stopping(self) -> bool:
        """Whether the search is cancelled (sets ``cancelled`` once the token is)."""
        if self.token is not None and self.token.cancelled:
            self.cancelled = True
            if self.pulse is not None:
                self.pulse.announce_cancel()  # displays freeze here, not where saving ends
        return self.cancelled

    def phase(self, text: str) -> contextlib.AbstractContextManager[None]:
        """Name a stretch that is not backtesting ("choosing next points") while it runs."""
        return self.pulse.phase(text) if self.pulse is not None else contextlib.nullcontext()

    def note(self, text: str) -> None:
        if self.pulse is not None:
            self.pulse.note(text)

    def run(self, batch: Sequence[Params]) -> list[Evaluation]:
        """Evaluate ``batch`` (memoised); on cancellation keep what finished and set the flag."""
        if self.stopping():
            return []
        keys = [_key(p) for p in batch]
        fresh = {k: p for k, p in zip(keys, batch, strict=True) if k not in self.memo}
        unique = list(fresh.values())
        unique_keys = list(fresh)
        try:
            metrics = list(self.evaluate(unique))
        except Cancelled as exc:
            self.cancelled = True
            metrics = list(exc.partial) if isinstance(exc.partial, list) else []
            unique = unique[: len(metrics)]
        for key, params, m in zip(unique_keys[: len(unique)], unique, metrics, strict=True):
            self.memo[key] = Evaluation(params, m, objective_value(m, self.objective))
        done = [self.memo[k] for k in keys if k in self.memo]
        self.evaluations.extend(done)
        if self.span is not None and (self.external or len(done) > len(unique)):
            # Backtests run in-process advance the iteration span through their child spans;
            # memo hits and external evaluators are counted here.
            self.span.advance(len(done) - (0 if self.external else len(unique)))
        return done


def _grid_cells(
    dims: Mapping[str, Dimension], feasible: _Feasibility, limit: int | None
) -> tuple[list[Params], int]:
    """The feasible cells in grid order (at most ``limit``) and the count of infeasible ones."""
    infeasible = 0
    points: list[Params] = []
    for point in grid_points(dims):
        params = feasible.resolve(point)
        if params is None:
            infeasible += 1
        elif limit is None or len(points) < limit:
            points.append(params)
    return points, infeasible


def _grid(
    search: _Search,
    points: list[Params],
    batch: int,
    fused: Callable[[list[Params]], tuple[EvaluateBatch, int]] | None = None,
) -> None:
    if fused is not None and points:
        # The whole grid in compiled chunks of cells, counted per chunk like an external batch.
        search.evaluate, batch = fused(points)
        search.external = True
    for i in range(0, len(points), batch):
        search.run(points[i : i + batch])
        if search.cancelled:
            break


def _random(
    search: _Search,
    dims: Mapping[str, Dimension],
    feasible: _Feasibility,
    iterations: int,
    batch: int,
    seed: int,
) -> int:
    rng = np.random.default_rng(seed)
    seen: set[tuple[tuple[str, ParamValue], ...]] = set()
    infeasible = 0
    attempts = 0
    max_attempts = 100 * iterations
    remaining = iterations
    while remaining > 0 and attempts < max_attempts and not search.cancelled:
        chunk: list[Params] = []
        while len(chunk) < min(batch, remaining) and attempts < max_attempts:
            attempts += 1
            point = random_point(dims, rng)
            params = feasible.resolve(point)
            if params is None:
                infeasible += 1
            elif _key(params) not in seen:
                seen.add(_key(params))
                chunk.append(params)
        if not chunk:
            break
        remaining -= len(search.run(chunk))
    return infeasible


def _bayes(
    search: _Search,
    dims: Mapping[str, Dimension],
    feasible: _Feasibility,
    iterations: int,
    batch: int,
    seed: int,
    estimator: str,
    n_initial_points: int | None,
    acq_func: str,
    acq_points: int,
) -> int:
    with search.phase("preparing the model"):  # importing scikit-optimize takes a second
        from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

        sk_dims, decode = skopt_space(dims)
        model = BayesModel(
            sk_dims,
            estimator=estimator,
            n_initial_points=(
                n_initial_points
                if n_initial_points is not None
                else max(1, min(10, iterations // 2))
            ),
            seed=seed,
            acq_func=acq_func,
            acq_points=acq_points,
        )
    infeasible = 0
    remaining = iterations
    worst: float | None = None  # the largest (worst) finite value told so far
    # The GP's matrices are tiny: threaded BLAS only adds contention (10× slower on 2 cores).
    # skopt warns when it replaces a point it proposed twice by a random one — its normal
    # working, and a warning printed through the live progress line.
    with threadpool_limits(limits=1, user_api="blas"), warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="The objective has been evaluated at point", category=UserWarning
        )
        # The token is checked before every ask (this condition), between the points of a batch
        # and before every tell.
        while remaining > 0 and not search.stopping():
            n = min(batch, remaining, model.initial_left() or batch)
            with search.phase(choosing(0, n)):
                xs = model.ask(n, search.stopping, search.note)
            if search.stopping() or not xs:
                break
            resolved = [feasible.resolve(decode(x)) for x in xs]
            done = search.run([p for p in resolved if p is not None])
            by_key = {_key(e.params): e for e in done}
            told: list[tuple[list[Any], float]] = []
            for x, params in zip(xs, resolved, strict=True):
                if params is None:
                    infeasible += 1
                    told.append((list(x), math.nan))
                elif (evaluation := by_key.get(_key(params))) is not None:
                    y = -evaluation.objective if math.isfinite(evaluation.objective) else math.nan
                    told.append((list(x), y))
                # else: cancelled before it ran, so nothing is known about it
            finite = [y for _, y in told if math.isfinite(y)]
            if finite:
                worst = max(finite) if worst is None else max(worst, *finite)
            penalty = worst if worst is not None else 0.0
            if search.stopping():
                break  # a refit for a search that asks no more
            if told:
                with search.phase("updating the model"):
                    model.tell(
                        [x for x, _ in told], [penalty if math.isnan(y) else y for _, y in told]
                    )
            remaining -= len(done)
            if not done and infeasible > 100 * iterations:
                break
    return infeasible


def optimize(
    bars: pd.DataFrame,
    strategy: str | StrategySpec,
    space: Mapping[str, object],
    *,
    method: Method = "bayes",
    iterations: int | None = 50,
    objective: str = "sharpe",
    fixed: Mapping[str, object] | None = None,
    constraint: Callable[[Mapping[str, ParamValue]], bool] | None = None,
    config: BacktestConfig | None = None,
    split: float | None = None,
    seed: int = 0,
    batch_size: int = 1,
    base_estimator: str = "gp",
    n_initial_points: int | None = None,
    acq_func: str = "EI",
    acq_points: int = 250,
    timeframe: str | None = None,
    evaluate_batch: EvaluateBatch | None = None,
    progress: ProgressTracker | Span | None = None,
    cancel_token: CancelToken | None = None,
    report_top: int = 10,
    pulse: Pulse | None = None,
) -> OptimizationResult:
    """Search ``space`` for the parameters of ``strategy`` maximising ``objective`` on ``bars``.

    ``method`` is "grid", "random" or "bayes" (``base_estimator`` "gp" or "forest",
    ``n_initial_points`` random points first — default min(10, iterations // 2) —, then
    ``acq_func`` maximised over ``acq_points`` sampled candidates); see the
    module docstring for constraints, iterations, split, progress and cancellation. With
    ``evaluate_batch`` given, batches of ``batch_size`` parameter sets go to it (it must evaluate
    the in-sample range ``[0, split_bar)``; see :class:`BatchEvaluator`), otherwise they run here.
    """
    spec = get_strategy(strategy)
    dims = normalise_space(space)
    unknown = sorted(set(dims) - {p.name for p in spec.params})
    if unknown:
        raise InvalidRequest(
            f"strategy {spec.name!r} has no parameter {', '.join(unknown)}: "
            f"use {', '.join(p.name for p in spec.params)}"
        )
    estimator = check_search(
        method, iterations, objective, batch_size=batch_size, base_estimator=base_estimator
    )
    split_bar: int | None = None
    if split is not None:
        if not 0.0 < split < 1.0:
            raise InvalidRequest(f"split={split}: use the in-sample fraction, 0 < split < 1")
        split_bar = int(len(bars) * split)
        if split_bar < 2 or len(bars) - split_bar < 2:
            raise InvalidRequest(
                f"split={split} leaves fewer than 2 bars on one side of {len(bars)}"
            )

    feasible = _Feasibility(spec, fixed or {}, constraint)
    cells: list[Params] = []
    infeasible = 0
    total = iterations
    if method == "grid":  # known before the stage opens, so its first event shows "…/N"
        cells, infeasible = _grid_cells(dims, feasible, iterations)
        total = len(cells)
    token: CancelToken | None
    if isinstance(progress, ProgressTracker):
        token = cancel_token if cancel_token is not None else progress.cancel_token
        stage: Span | None = progress.stage("optimize", total=total, unit="Iteration")
    else:
        token = cancel_token
        if progress is not None:
            token = token if token is not None else progress.tracker.cancel_token
        stage = progress.child("optimize", total=total, unit="Iteration") if progress else None
    prepared = PreparedBars.from_frame(bars)
    evaluator = evaluate_batch or BatchEvaluator(
        prepared,
        spec,
        config=config,
        stop=split_bar,
        timeframe=timeframe,
        progress=stage,
        cancel_token=token,
    )
    search = _Search(evaluator, objective, stage, evaluate_batch is not None, token, pulse)

    fused: Callable[[list[Params]], tuple[EvaluateBatch, int]] | None = None
    if method == "grid" and evaluate_batch is None and is_sma_cross(spec):

        def fused(points: list[Params]) -> tuple[EvaluateBatch, int]:
            windows = {int(p[name]) for p in points for name in ("fast", "slow")}
            grid = SmaCrossGrid(
                prepared, sorted(windows), config=config, stop=split_bar, timeframe=timeframe
            )
            chunk = (config or BacktestConfig()).chunk_size // grid.bar_count
            return grid, max(1, chunk)

    with contextlib.ExitStack() as running:
        if stage is not None:
            running.enter_context(stage)
            if pulse is None:
                search.pulse = running.enter_context(Pulse(stage, token=token))
        if method == "grid":
            _grid(search, cells, batch_size, fused)
        elif method == "random":
            assert iterations is not None  # checked above; for the type checker
            infeasible = _random(search, dims, feasible, iterations, batch_size, seed)
        else:
            assert iterations is not None
            infeasible = _bayes(
                search,
                dims,
                feasible,
                iterations,
                batch_size,
                seed,
                estimator,
                n_initial_points,
                acq_func,
                acq_points,
            )

    evaluations = search.evaluations
    if split_bar is not None and not search.cancelled and evaluations:
        evaluations = _out_of_sample(
            evaluations, prepared, spec, config, split_bar, timeframe, objective, report_top
        )
    best = max(evaluations, key=lambda e: _rank(e.objective), default=None)
    if best is not None and math.isnan(best.objective):
        best = evaluations[0]
    logger.info(
        "%s search of %s: %d evaluations, %d infeasible skipped%s",
        method,
        spec.name,
        len(evaluations),
        infeasible,
        ", cancelled" if search.cancelled else "",
    )
    return OptimizationResult(
        method=method,
        strategy=spec.name,
        objective=objective,
        evaluations=tuple(evaluations),
        best=best,
        iterations=len(evaluations),
        infeasible=infeasible,
        cancelled=search.cancelled,
        seed=seed,
        split_bar=split_bar,
    )


def _out_of_sample(
    evaluations: list[Evaluation],
    bars: PreparedBars,
    spec: StrategySpec,
    config: BacktestConfig | None,
    split_bar: int,
    timeframe: str | None,
    objective: str,
    top: int,
) -> list[Evaluation]:
    ranked = sorted(range(len(evaluations)), key=lambda i: -_rank(evaluations[i].objective))
    chosen = ranked[: max(top, 1)]
    metrics = evaluate_params(
        bars,
        spec,
        [evaluations[i].params for i in chosen],
        config=config,
        start=split_bar,
        timeframe=timeframe,
    )
    updated = list(evaluations)
    for i, m in zip(chosen, metrics, strict=True):
        updated[i] = replace(
            evaluations[i], out_of_sample=m, out_of_sample_objective=objective_value(m, objective)
        )
    return updated
