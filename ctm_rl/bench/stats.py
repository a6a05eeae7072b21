"""Statistics over seeds: interquartile mean, percentile-bootstrap confidence intervals, sample efficiency.

numpy only.  Every bootstrap takes its own seeded generator, so a report computed twice from the same runs
is identical (a benchmark table that changes on re-rendering would be hard to trust).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
CONFIDENCE = 0.95


def iqm(values: Sequence[float] | np.ndarray, axis: int = -1) -> np.ndarray | float:
    """Interquartile mean: the mean of the middle 50% of ``values`` along ``axis``.

    ``floor(n / 4)`` values are dropped at each end (``scipy.stats.trim_mean(x, 0.25)``, as rliable does),
    so with fewer than 4 values it is the plain mean.
    """
    array = np.sort(np.asarray(values, dtype=float), axis=axis)
    n = array.shape[axis]
    if n == 0:
        raise ValueError("the IQM of no values is undefined")
    cut = n // 4
    return np.take(array, np.arange(cut, n - cut), axis=axis).mean(axis=axis)


def _mean(values: np.ndarray, axis: int = -1) -> np.ndarray | float:
    return np.mean(values, axis=axis)


STATISTICS: dict[str, Callable[..., np.ndarray | float]] = {"mean": _mean, "iqm": iqm}


@dataclass(frozen=True)
class Estimate:
    """A statistic over seeds and its bootstrap confidence interval."""

    value: float
    low: float
    high: float

    def format(self, digits: int = 1) -> str:
        return f"{self.value:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


def bootstrap_ci(values: Sequence[float] | np.ndarray, statistic: str = "mean",
                 resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
                 confidence: float = CONFIDENCE) -> Estimate:
    """``statistic`` (``mean`` or ``iqm``) of ``values`` with a percentile-bootstrap confidence interval.

    Seeds are resampled with replacement ``resamples`` times; the interval is the central ``confidence``
    share of the resampled statistics.  With one value the interval is that value: one seed says nothing
    about the spread.
    """
    array = np.asarray(values, dtype=float)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"bootstrap_ci needs a non-empty 1-d sequence, got shape {array.shape}")
    low, high = curve_ci(array[:, None], statistic, resamples, seed, confidence)
    function = STATISTICS[statistic]
    return Estimate(float(function(array)), float(low[0]), float(high[0]))


def curve_ci(table: np.ndarray, statistic: str = "mean", resamples: int = BOOTSTRAP_RESAMPLES,
             seed: int = BOOTSTRAP_SEED, confidence: float = CONFIDENCE) -> tuple[np.ndarray, np.ndarray]:
    """Pointwise bootstrap interval of ``statistic`` over the rows (seeds) of ``table`` (seeds x points).

    The same resampled seed sets are used at every point, so a seed stays one seed along its curve.
    """
    table = np.asarray(table, dtype=float)
    n_seeds = table.shape[0]
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, n_seeds, size=(resamples, n_seeds))
    resampled = STATISTICS[statistic](table[picks], axis=1)  # (resamples, points)
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(resampled, [tail, 100 - tail], axis=0)
    return low, high


def first_step_reaching(steps: Sequence[int] | np.ndarray, values: Sequence[float] | np.ndarray,
                        threshold: float) -> int | None:
    """The first of ``steps`` at which ``values`` (e.g. the mean return over seeds) reaches ``threshold``."""
    for step, value in zip(steps, values, strict=True):
        if value >= threshold:
            return int(step)
    return None
