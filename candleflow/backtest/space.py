"""Search spaces over strategy parameters: Integer, Real and Categorical dimensions.

A space maps parameter names to dimensions; the grid enumerates it (every Integer step, every
Categorical choice, ``grid_points`` values of a Real), random search samples it with a seeded
numpy ``Generator``, and Bayesian search sees it through :func:`skopt_space`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from candleflow.backtest.strategies import ParamValue
from candleflow.errors import InvalidRequest

__all__ = [
    "Categorical",
    "Dimension",
    "Integer",
    "Real",
    "grid_points",
    "normalise_space",
    "random_point",
    "skopt_space",
]


@dataclass(frozen=True, slots=True)
class Integer:
    """Integers ``low, low + step, …`` up to ``high`` (inclusive)."""

    low: int
    high: int
    step: int = 1

    def __post_init__(self) -> None:
        if self.step < 1 or self.high < self.low:
            raise InvalidRequest(
                f"Integer({self.low}, {self.high}, step={self.step}) is empty: "
                "use low ≤ high, step ≥ 1"
            )

    @property
    def count(self) -> int:
        return (self.high - self.low) // self.step + 1

    def values(self) -> list[ParamValue]:
        return list(range(self.low, self.high + 1, self.step))


@dataclass(frozen=True, slots=True)
class Real:
    """Floats in [low, high], ``prior`` "uniform" or "log-uniform"; a grid takes ``grid_points``."""

    low: float
    high: float
    prior: Literal["uniform", "log-uniform"] = "uniform"
    grid_points: int = 5

    def __post_init__(self) -> None:
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.low < self.high):
            raise InvalidRequest(f"Real({self.low}, {self.high}) is empty: use low < high")
        if self.prior not in ("uniform", "log-uniform") or (
            self.prior == "log-uniform" and self.low <= 0
        ):
            raise InvalidRequest(
                f"Real prior {self.prior!r} with low={self.low}: use 'uniform', or 'log-uniform' "
                "with low > 0"
            )
        if self.grid_points < 2:
            raise InvalidRequest(f"Real grid_points={self.grid_points}: use ≥ 2")

    def values(self) -> list[ParamValue]:
        space = np.geomspace if self.prior == "log-uniform" else np.linspace
        return [float(v) for v in space(self.low, self.high, self.grid_points)]


@dataclass(frozen=True, slots=True)
class Categorical:
    """One of ``choices`` (ints, floats or bools)."""

    choices: tuple[ParamValue, ...]

    def __post_init__(self) -> None:
        if not self.choices:
            raise InvalidRequest("Categorical() has no choices: give at least one value")

    def values(self) -> list[ParamValue]:
        return list(self.choices)


Dimension = Integer | Real | Categorical


def normalise_space(space: Mapping[str, object]) -> dict[str, Dimension]:
    """``space`` with plain sequences turned into Categoricals; InvalidRequest if unusable."""
    if not space:
        raise InvalidRequest("the search space is empty: give at least one parameter range")
    dims: dict[str, Dimension] = {}
    for name, dim in space.items():
        if isinstance(dim, Integer | Real | Categorical):
            dims[name] = dim
        elif isinstance(dim, Sequence | range) and not isinstance(dim, str):
            dims[name] = Categorical(tuple(dim))
        else:
            raise InvalidRequest(
                f"search dimension {name}={dim!r} is not understood: use Integer(low, high), "
                "Real(low, high), Categorical([...]) or a list of values"
            )
    return dims


def grid_points(dims: Mapping[str, Dimension]) -> Iterator[dict[str, ParamValue]]:
    """Every grid cell, the first dimension varying slowest (``itertools.product`` order)."""
    names = list(dims)
    for combo in itertools.product(*(dims[n].values() for n in names)):
        yield dict(zip(names, combo, strict=True))


def random_point(dims: Mapping[str, Dimension], rng: np.random.Generator) -> dict[str, ParamValue]:
    """One point drawn uniformly per dimension (log-uniformly for a log-uniform Real)."""
    point: dict[str, ParamValue] = {}
    for name, dim in dims.items():
        if isinstance(dim, Integer):
            point[name] = dim.low + dim.step * int(rng.integers(0, dim.count))
        elif isinstance(dim, Real):
            if dim.prior == "log-uniform":
                point[name] = float(np.exp(rng.uniform(np.log(dim.low), np.log(dim.high))))
            else:
                point[name] = float(rng.uniform(dim.low, dim.high))
        else:
            point[name] = dim.choices[int(rng.integers(0, len(dim.choices)))]
    return point


def skopt_space(
    dims: Mapping[str, Dimension],
) -> tuple[list[Any], Callable[[Sequence[Any]], dict[str, ParamValue]]]:
    """scikit-optimize dimensions for ``dims`` and the decoder of its points.

    An Integer with a step becomes skopt's Integer over step indices and a Categorical one over
    choice indices, so every value skopt proposes maps back to a legal one.
    """
    from skopt import space as sk  # type: ignore[import-untyped]

    names = list(dims)
    sk_dims: list[Any] = []
    for name in names:
        dim = dims[name]
        if isinstance(dim, Integer):
            sk_dims.append(sk.Integer(0, dim.count - 1, name=name))
        elif isinstance(dim, Real):
            sk_dims.append(sk.Real(dim.low, dim.high, prior=dim.prior, name=name))
        else:
            sk_dims.append(sk.Categorical(list(range(len(dim.choices))), name=name))

    def decode(x: Sequence[Any]) -> dict[str, ParamValue]:
        point: dict[str, ParamValue] = {}
        for name, value in zip(names, x, strict=True):
            dim = dims[name]
            if isinstance(dim, Integer):
                point[name] = dim.low + dim.step * int(value)
            elif isinstance(dim, Real):
                point[name] = float(value)
            else:
                point[name] = dim.choices[int(value)]
        return point

    return sk_dims, decode
