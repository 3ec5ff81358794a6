"""Search spaces over strategy parameters: Integer, Real and Categorical dimensions.

A space maps parameter names to dimensions; the grid enumerates it (every Integer step, every
Categorical choice, ``grid_points`` values of a Real), random search samples it with a seeded
numpy ``Generator``, and Bayesian search sees it through :func:`skopt_space`. Spaces are written
``"fast=5:50,slow=10:200"`` (``low:high`` inclusive, ``low:high:step`` for integers, ``a|b|c``
for a list of choices) or given as a mapping ``{"fast": [5, 50]}``; :func:`parse_space` turns
either into dimensions typed by the strategy's parameters, and :func:`space_text` writes them back.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from candleflow.backtest.strategies import Param, ParamValue, StrategySpec, get_strategy
from candleflow.errors import InvalidRequest

__all__ = [
    "DEFAULT_SPACES",
    "Categorical",
    "Dimension",
    "Integer",
    "Real",
    "default_space",
    "grid_points",
    "normalise_space",
    "parse_space",
    "random_point",
    "skopt_space",
    "space_text",
]

#: The space searched when none is given, per strategy (``parse_space`` syntax).
DEFAULT_SPACES: dict[str, str] = {
    "sma_cross": "fast=5:50,slow=10:200",
    "rsi_reversion": "window=5:30,lower=10.0:40.0,upper=60.0:90.0",
    "bollinger_breakout": "window=10:60,k=1.0:3.0",
}
_EXAMPLE = "e.g. 'fast=5:50,slow=10:200' (low:high, low:high:step, or a|b|c)"


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


def default_space(strategy: str | StrategySpec) -> dict[str, Dimension]:
    """The space searched for ``strategy`` when none is given (:data:`DEFAULT_SPACES`)."""
    spec = get_strategy(strategy)
    return parse_space(DEFAULT_SPACES[spec.name], spec)


def parse_space(
    space: str | Mapping[str, object] | None, strategy: str | StrategySpec
) -> dict[str, Dimension]:
    """The search space of ``strategy`` from text, a mapping, or None (its default space)."""
    spec = get_strategy(strategy)
    if space is None or (isinstance(space, str) and not space.strip()):
        return default_space(spec)
    if isinstance(space, str):
        items: dict[str, object] = {}
        for item in filter(None, (part.strip() for part in space.split(","))):
            name, sep, text = item.partition("=")
            if not sep or not name.strip() or not text.strip():
                raise InvalidRequest(
                    f"malformed search dimension {item!r}: use name=spec, {_EXAMPLE}"
                )
            items[name.strip()] = text.strip()
        space = items
    if not isinstance(space, Mapping) or not space:
        raise InvalidRequest(f"search space {space!r} is empty or not understood: {_EXAMPLE}")
    known = {p.name: p for p in spec.params}
    dims: dict[str, Dimension] = {}
    for key, value in space.items():
        param = known.get(str(key))
        if param is None:
            raise InvalidRequest(
                f"strategy {spec.name!r} has no parameter {key!r} to search: use {', '.join(known)}"
            )
        dims[param.name] = _dimension(param, value, spec.name)
    return dims


def _dimension(param: Param, value: object, strategy: str) -> Dimension:
    if isinstance(value, Integer | Real | Categorical):
        return value
    where = f"search dimension {param.name}={value!r}"
    if isinstance(value, str):
        if "|" in value:
            value = [v.strip() for v in value.split("|")]
        elif ":" in value:
            value = tuple(v.strip() for v in value.split(":"))
            if len(value) not in (2, 3) or param.kind is bool:
                raise InvalidRequest(f"{where} is not understood: {_EXAMPLE}")
        else:
            value = [value]
    if (
        isinstance(value, tuple | list)
        and len(value) in (2, 3)
        and param.kind is not bool
        and (isinstance(value, tuple) or all(isinstance(v, int | float) for v in value))
    ):
        # [low, high] (or low:high) is a range; a list of other length is a list of choices.
        bounds = [param.coerce(v, strategy) for v in value]
        if param.kind is int:
            step = int(bounds[2]) if len(bounds) == 3 else 1
            return Integer(int(bounds[0]), int(bounds[1]), step)
        if len(bounds) == 3:
            raise InvalidRequest(f"{where}: a float range takes no step, use low:high")
        return Real(float(bounds[0]), float(bounds[1]))
    if isinstance(value, list | tuple):
        return Categorical(tuple(param.coerce(v, strategy) for v in value))
    return Categorical((param.coerce(value, strategy),))


def space_text(dims: Mapping[str, Dimension]) -> str:
    """``parse_space`` syntax for ``dims`` (what a run searched, for its summary)."""
    parts = []
    for name, dim in dims.items():
        if isinstance(dim, Integer):
            step = f":{dim.step}" if dim.step != 1 else ""
            parts.append(f"{name}={dim.low}:{dim.high}{step}")
        elif isinstance(dim, Real):
            parts.append(f"{name}={dim.low}:{dim.high}")
        else:
            parts.append(f"{name}={'|'.join(str(c) for c in dim.choices)}")
    return ",".join(parts)
