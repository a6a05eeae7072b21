"""Numerical helpers behind the pictures: neuron choice, synchronisation matrices, PCA, frame schedules.

Plain numpy, no plotting, so each rule is testable on its own and shared by the PNGs, the animation and
the TensorBoard callback.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image


def select_neurons(post: np.ndarray, n_neurons: int, neurons: Sequence[int] | None = None) -> np.ndarray:
    """Indices of the neurons to draw, in ascending order.

    Without an explicit choice, the ``n_neurons`` neurons whose post-activations vary most over the
    episode: a random pick of a trained CTM often shows near-constant neurons, which says little.

    :param post: post-activations ``(T, K, D)``.
    :param n_neurons: how many to pick (capped at ``D``).
    :param neurons: explicit neuron indices; overrides the variance rule.
    :return: sorted integer indices.
    """
    n_total = post.shape[-1]
    if neurons is not None:
        chosen = np.asarray(list(neurons), dtype=np.int64)
        if chosen.size == 0 or chosen.min() < 0 or chosen.max() >= n_total:
            raise ValueError(f"neuron indices must lie in [0, {n_total}), got {list(neurons)}")
        return np.unique(chosen)
    if n_neurons < 1:
        raise ValueError(f"n_neurons must be positive, got {n_neurons}")
    spread = post.reshape(-1, n_total).std(axis=0)
    # A stable sort keeps the choice reproducible when several neurons tie (e.g. all constant).
    return np.sort(np.argsort(-spread, kind="stable")[: min(n_neurons, n_total)])


def pair_layout(synch_left: np.ndarray, synch_right: np.ndarray, neuron_select_type: str) -> int | None:
    """Side ``n`` of the synchronisation matrix, or ``None`` when the pairs form no matrix (random-pairing).

    ``first-last`` and ``random`` store the upper triangle (``i <= j``, row-major) of an ``n x n`` matrix,
    ``n(n+1)/2`` entries; ``random-pairing`` stores ``n`` independent pairs.
    """
    if neuron_select_type == "random-pairing":
        return None
    size = len(synch_left)
    n = (math.isqrt(8 * size + 1) - 1) // 2
    if n * (n + 1) // 2 != size:
        raise ValueError(f"{size} synchronisation entries are not the upper triangle of a square matrix")
    return n


def sync_matrix(sync: np.ndarray, n: int) -> np.ndarray:
    """Rebuild the symmetric ``(..., n, n)`` matrix from upper-triangle vectors ``(..., n(n+1)/2)``.

    The CTM only computes ``i <= j`` because synchronisation is symmetric; mirroring makes the picture
    read like the paper's matrices.
    """
    rows, cols = np.triu_indices(n)
    matrix = np.zeros((*sync.shape[:-1], n, n), dtype=sync.dtype)
    matrix[..., rows, cols] = sync
    matrix[..., cols, rows] = sync
    return matrix


def pca_2d(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project ``(N, S)`` points on their first two principal components (numpy SVD, no sklearn).

    :return: coordinates ``(N, 2)`` (zero-padded when the data has fewer than two directions) and the
        fraction of variance each of the two components explains.
    """
    centred = points - points.mean(axis=0, keepdims=True)
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    coords = np.zeros((len(points), 2))
    n_comp = min(2, vt.shape[0])
    coords[:, :n_comp] = centred @ vt[:n_comp].T
    variance = singular**2
    ratios = np.zeros(2)
    if variance.sum() > 0:
        ratios[:n_comp] = variance[:n_comp] / variance.sum()
    # Fix the sign of each axis (SVD leaves it arbitrary) so re-runs of the same episode look the same.
    signs = np.sign(coords[np.abs(coords).argmax(axis=0), [0, 1]])
    coords *= np.where(signs == 0, 1.0, signs)
    return coords, ratios


def frame_schedule(n_steps: int, n_ticks: int, max_frames: int | None = None) -> list[tuple[int, int]]:
    """The ``(env step, tick)`` pairs the animation draws, one frame each.

    Every tick of every step by default (``n_steps * n_ticks`` frames).  With ``max_frames`` and a longer
    episode, whole env steps are kept at even spacing (always the first and the last), so each kept step
    still shows all of its ticks: ``min(n_steps, max(1, max_frames // n_ticks)) * n_ticks`` frames.
    """
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be positive, got {max_frames}")
    steps = np.arange(n_steps)
    if max_frames is not None and n_steps * n_ticks > max_frames:
        keep = max(1, max_frames // n_ticks)
        steps = np.unique(np.linspace(0, n_steps - 1, keep).round().astype(int))
    return [(int(t), k) for t in steps for k in range(n_ticks)]


def robust_limit(values: np.ndarray, quantile: float = 0.99) -> float:
    """A symmetric colour limit that ignores a few outliers (and never returns 0)."""
    finite = np.abs(values[np.isfinite(values)])
    if finite.size == 0:
        return 1.0
    limit = float(np.quantile(finite, quantile))
    return limit if limit > 0 else 1.0


def value_range(values: np.ndarray, pad: float = 0.05) -> tuple[float, float]:
    """Axis limits covering ``values`` with a small margin (a unit range around a constant)."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return 0.0, 1.0
    low, high = float(finite.min()), float(finite.max())
    if high - low < 1e-9:
        return low - 0.5, high + 0.5
    margin = pad * (high - low)
    return low - margin, high + margin


def block_mean(image: np.ndarray, factor: int) -> np.ndarray:
    """Shrink an ``(H, W, C)`` uint8 image ``factor`` times by averaging ``factor x factor`` blocks.

    Averaging (not striding) keeps thin lines such as CartPole's pole visible.  Pillow's ``reduce`` does
    exactly this in C, several times faster than a numpy mean over a reshaped array.
    """
    if factor <= 1:
        return image
    return np.asarray(Image.fromarray(np.ascontiguousarray(image)).reduce(factor))
