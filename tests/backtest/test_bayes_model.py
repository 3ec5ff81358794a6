"""The Bayesian search's model (candleflow.optimize.bayes): same seed, same search; the GP's
hyperparameters re-tuned only as the data grows, held in between; the quick predictive spread
equal to skopt's; a forest batch of distinct new points from one fit; no batch straddling the
initial points; and the benchmark's quick mode runs."""

from __future__ import annotations

import io
from contextlib import redirect_stdout
from typing import Any

import numpy as np
import pandas as pd
import pytest

from candleflow.optimize.bayes import REFIT_GROWTH, RETUNE_GROWTH, BayesModel
from candleflow.optimize.search import Integer, optimize
from tests.backtest.conftest import synthetic_bars

SPACE = {"fast": Integer(2, 30), "slow": Integer(10, 120)}


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return synthetic_bars(3_000, seed=11)


def _dims() -> list[Any]:
    from skopt.space import Integer as SkInteger  # type: ignore[import-untyped]

    return [SkInteger(0, 40, name="a"), SkInteger(0, 60, name="b")]


def _objective(x: list[Any]) -> float:
    a, b = x
    return float(np.sin(a / 6.0) + np.cos(b / 11.0))


def _told(model: BayesModel) -> BayesModel:
    """``model`` told 30 random points of :func:`_objective`."""
    rng = np.random.default_rng(2)
    xs = [[int(rng.integers(0, 41)), int(rng.integers(0, 61))] for _ in range(30)]
    model.tell(xs, [_objective(x) for x in xs])
    return model


@pytest.mark.parametrize("estimator", ["gp", "forest"])
def test_two_runs_with_one_seed_give_the_same_search(bars: pd.DataFrame, estimator: str) -> None:
    def run() -> Any:
        return optimize(bars, "sma_cross", SPACE, method="bayes", iterations=40, batch_size=8,
                        seed=5, base_estimator=estimator)  # fmt: skip

    first, second = run(), run()
    assert first.best is not None and second.best is not None
    assert first.best.params == second.best.params
    assert [e.params for e in first.evaluations] == [e.params for e in second.evaluations]
    assert first.iterations == 40
    other = optimize(bars, "sma_cross", SPACE, method="bayes", iterations=40, batch_size=8,
                     seed=6, base_estimator=estimator)  # fmt: skip
    assert [e.params for e in other.evaluations] != [e.params for e in first.evaluations]


def test_gp_hyperparameters_are_retuned_as_the_data_grows_and_held_between() -> None:
    model = BayesModel(_dims(), estimator="GP", n_initial_points=10, seed=3)
    tuned: list[int] = []
    counts: list[int] = []
    while len(model.optimizer.yi) < 80:
        xs = model.ask(4 if model.initial_left() == 0 else 10)
        model.tell(xs, [_objective(x) for x in xs])
        counts.append(len(model.optimizer.yi))
        tuned.append(model.tuned_at)
    # Hand-checked schedule: tuned at 10 (the first fit), then at the first count ≥ 1.25× the
    # last tuned one, counting in steps of 4: 14 (≥ 12.5), 18 (≥ 17.5), 26 (≥ 22.5), 34 (≥ 32.5),
    # 46 (≥ 42.5), 58 (≥ 57.5), 74 (≥ 72.5).
    assert RETUNE_GROWTH == 1.25
    assert sorted(set(tuned)) == [10, 14, 18, 26, 34, 46, 58, 74]
    assert counts[0] == 10 and tuned[0] == 10
    held = model.held
    assert held is not None and held.optimizer is None  # between tunings: the kernel is held
    assert model.tuner.n_restarts_optimizer == 0  # re-tuning starts from the last values
    # The held kernel carries the fitted noise (skopt zeroes it in kernel_ for prediction).
    assert held.kernel.k2.noise_level > 0


def test_the_quick_predictive_spread_equals_skopts() -> None:
    from sklearn.base import clone
    from skopt.learning import GaussianProcessRegressor  # type: ignore[import-untyped]

    model = _told(BayesModel(_dims(), estimator="GP", n_initial_points=5, seed=1))
    quick = model.optimizer.models[-1]
    plain = GaussianProcessRegressor(**clone(quick).get_params(deep=False))
    for name in ("X_train_", "alpha_", "K_inv_", "kernel_", "y_train_std_", "y_train_mean_",
                 "L_", "_y_train_mean", "_y_train_std"):  # fmt: skip
        setattr(plain, name, getattr(quick, name))
    candidates = model.optimizer.space.transform(model.optimizer.space.rvs(200, random_state=4))
    mean_q, std_q = quick.predict(candidates, return_std=True)
    mean_p, std_p = plain.predict(candidates, return_std=True)
    np.testing.assert_allclose(mean_q, mean_p, rtol=1e-10, atol=1e-12)
    # Near-zero spreads (at told points) differ in rounding only: an absolute tolerance.
    np.testing.assert_allclose(std_q, std_p, rtol=1e-6, atol=1e-6)


@pytest.fixture
def forest_fits(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The observations each random-forest fit saw, in order (recorded as they happen)."""
    from sklearn.ensemble import RandomForestRegressor

    fitted_at: list[int] = []
    fit = RandomForestRegressor.fit

    def counted_fit(self: Any, x: Any, y: Any, *args: Any, **kwargs: Any) -> Any:
        fitted_at.append(len(y))
        return fit(self, x, y, *args, **kwargs)

    monkeypatch.setattr(RandomForestRegressor, "fit", counted_fit)
    return fitted_at


def test_a_forest_batch_is_distinct_new_points_from_one_fit(forest_fits: list[int]) -> None:
    fits = forest_fits
    model = BayesModel(_dims(), estimator="RF", n_initial_points=6, seed=2)
    xs = model.ask(16)
    assert len(xs) == 6  # the initial points only: a batch never straddles them
    model.tell(xs, [_objective(x) for x in xs])
    assert len(fits) == 1
    batch = model.ask(16)
    assert len(fits) == 1  # chosen from the fit of the last tell
    assert len(batch) == 16
    assert len({tuple(x) for x in batch}) == 16
    assert not {tuple(x) for x in batch} & {tuple(x) for x in xs}


@pytest.mark.parametrize("estimator", ["RF", "ET"])
def test_the_quick_forest_spread_equals_skopts(estimator: str) -> None:
    from skopt import learning  # type: ignore[import-untyped]

    model = _told(BayesModel(_dims(), estimator=estimator, n_initial_points=5, seed=1))
    quick = model.forest
    assert type(quick).__name__.startswith("Quick")
    plain_class = {"RF": learning.RandomForestRegressor, "ET": learning.ExtraTreesRegressor}
    plain = plain_class[estimator](**quick.get_params(deep=False))
    plain.fit(model.optimizer.space.transform(model.optimizer.Xi), model.optimizer.yi)
    candidates = model.optimizer.space.transform(model.optimizer.space.rvs(200, random_state=4))
    mean_q, std_q = quick.predict(candidates, return_std=True)
    mean_p, std_p = plain.predict(candidates, return_std=True)  # same seed: the same trees
    np.testing.assert_allclose(mean_q, mean_p, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(std_q, std_p, rtol=1e-9, atol=1e-9)


def test_a_forest_asked_one_point_at_a_time_is_refitted_as_the_data_grows(
    forest_fits: list[int],
) -> None:
    model = BayesModel(_dims(), estimator="RF", n_initial_points=6, seed=2)
    while len(model.optimizer.yi) < 40:
        xs = model.ask(1 if model.initial_left() == 0 else 6)
        model.tell(xs, [_objective(x) for x in xs])
    # Hand-checked: fitted at 6 (the first fit), then at the first count ≥ 1.2× the last fitted
    # one: 8 (≥ 7.2), 10 (≥ 9.6), 12 (≥ 12), 15 (≥ 14.4), 18 (≥ 18), 22 (≥ 21.6), 27 (≥ 26.4),
    # 33 (≥ 32.4), 40 (≥ 39.6).
    assert REFIT_GROWTH == 1.2
    assert forest_fits == [6, 8, 10, 12, 15, 18, 22, 27, 33, 40]


def test_a_gp_batch_is_asked_after_the_initial_points() -> None:
    model = BayesModel(_dims(), estimator="GP", n_initial_points=10, seed=0)
    first = model.ask(16)
    assert len(first) == 10 and model.initial_left() == 10
    model.tell(first, [_objective(x) for x in first])
    assert model.initial_left() == 0
    assert len(model.ask(16)) == 16


def test_the_benchmark_runs_in_quick_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    from bench import bench_bayes

    monkeypatch.setenv("CANDLEFLOW_BENCH_QUICK", "1")
    out = io.StringIO()
    with redirect_stdout(out):
        bench_bayes.main()
    text = out.getvalue()
    assert "24 iterations of sma_cross" in text and "2 seeds" in text
    for label in ("bayes gp before", "bayes gp now", "bayes forest before",
                  "bayes forest now", "random"):  # fmt: skip
        assert label in text
    assert "ms/iteration" in text
