"""The ETA of an operation from the observed rate of the work unit that dominates it.

A run's time goes mostly to one stage's items — segments of a load, iterations (with their
candles) of an optimization, series of a backfill — while the stages around it are short and
uneven. A rate taken over the overall percentage mixes them (a quick validate makes the first
seconds look fast, a slow first segment makes them look slow), so :class:`EtaEstimator` takes the
rate of the current stage's items over a sliding window of their *changes* (at least
``window_min`` seconds or ``window_share`` of the stage so far: smooth, and still following a
rate that changes), projects the stage's end from the moment of the last change (so a run whose
items finish in steps gets no saw-tooth), and adds the stages still to come at the seconds per
weight the short stages already done took (or, before any, at this stage's own pace).

It says nothing until the estimate means something: the stage must have done ``min_fraction``
of its items over at least ``min_seconds``. ``bench/bench_eta.py`` measures its accuracy on
runs with known constant rates.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Final

__all__ = ["EtaEstimator"]

#: A finished stage counts as "short" (its pace is used for the stages to come) up to this share
#: of the planned weight.
_SHORT_SHARE: Final = 0.2


class EtaEstimator:
    """Seconds left, from stage boundaries and the current stage's item progress (not
    thread-safe: the tracker calls it under its lock)."""

    def __init__(
        self,
        *,
        window_min: float = 10.0,
        window_share: float = 0.5,
        min_fraction: float = 0.02,
        min_seconds: float = 0.5,
        max_points: int = 4096,
    ) -> None:
        self.window_min, self.window_share = window_min, window_share
        self.min_fraction, self.min_seconds = min_fraction, min_seconds
        self._finished: list[tuple[float, float]] = []  # (weight, seconds) of stages done
        self._stage: tuple[float, float] | None = None  # (weight, started) of the current one
        self._points: deque[tuple[float, float]] = deque(maxlen=max_points)

    def enter_stage(self, weight: float, now: float) -> None:
        """A top-level stage starts (the one before it, if any, ends now)."""
        if self._stage is not None:
            previous_weight, started = self._stage
            self._finished.append((previous_weight, max(now - started, 0.0)))
        self._stage = (weight, now)
        self._points.clear()
        self._points.append((now, 0.0))

    def observe(self, now: float, progress: float) -> None:
        """The current stage's items progress (items done plus running children's fractions)."""
        if self._stage is None or not self._points:
            return
        last_t, last_p = self._points[-1]
        if progress > last_p and now >= last_t:
            self._points.append((now, progress))

    def estimate(
        self, now: float, total: int | None, rest_weight: float, planned_weight: float
    ) -> float | None:
        """Seconds left, or None while not meaningful (or the stage has no item count).

        ``total`` is the current stage's item count, ``rest_weight`` the weight of the stages
        after it, ``planned_weight`` the weight of all stages.
        """
        if self._stage is None or not total or total <= 0 or len(self._points) < 2:
            return None
        weight, started = self._stage
        t1, p1 = self._points[-1]
        if p1 / total < self.min_fraction or t1 - started < self.min_seconds:
            return None
        window = max(self.window_min, self.window_share * (t1 - started))
        t0, p0 = self._points[0]
        for t, p in self._points:  # the latest change at least a window before the last one
            if t > t1 - window:
                break
            t0, p0 = t, p
        if t1 <= t0 or p1 <= p0:
            return None
        rate = (p1 - p0) / (t1 - t0)
        left = max(total - p1, 0.0) / rate
        stage_left = max(left - max(now - t1, 0.0), 0.0)
        pace = self._short_pace(planned_weight)
        if pace is None:  # no short stage done yet: this stage's own seconds per weight
            pace = (t1 - started + left) / weight if weight > 0 else 0.0
        eta = stage_left + rest_weight * pace
        return eta if math.isfinite(eta) and eta >= 0 else None

    def estimate_short(
        self, now: float, fraction: float, rest_weight: float, planned_weight: float
    ) -> float | None:
        """Seconds left in a stage without items (merge, save, report) and those after it, at
        the pace of the short stages done, once only short stages are left; else None."""
        pace = self._short_pace(planned_weight)
        if pace is None or self._stage is None:
            return None
        weight = self._stage[0]
        if weight + rest_weight > _SHORT_SHARE * planned_weight:
            return None  # the long stage is still to come: its pace is unknown
        left = max(weight * (1.0 - fraction) * pace, 0.0)
        return left + rest_weight * pace

    def _short_pace(self, planned_weight: float) -> float | None:
        limit = _SHORT_SHARE * planned_weight
        short = [(w, s) for w, s in self._finished if 0 < w <= limit]
        weight = sum(w for w, _ in short)
        return sum(s for _, s in short) / weight if weight > 0 else None
