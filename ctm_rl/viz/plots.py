"""Static pictures of one recorded episode: neuron activation traces and the synchronisation trajectory.

Figures are built on matplotlib's object API with an Agg canvas attached (no ``pyplot``): nothing opens a
window, and the caller's own matplotlib backend (e.g. in a notebook) is left alone.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from ctm_rl.viz.analysis import pca_2d, select_neurons
from ctm_rl.viz.recording import Recording

# Env-step boundaries drawn at most this many times per panel; beyond, every m-th (said in the legend).
MAX_BOUNDARIES = 40
TICK_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


def new_figure(width: float, height: float, dpi: int = 100, layout: str | None = "constrained") -> Figure:
    """A figure with its own Agg canvas (render with ``figure_to_array`` or ``savefig``)."""
    fig = Figure(figsize=(width, height), dpi=dpi, layout=layout)
    FigureCanvasAgg(fig)
    return fig


def figure_to_array(fig: Figure) -> np.ndarray:
    """Render a figure to an ``(H, W, 3)`` uint8 array."""
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def save_png(fig: Figure, path: str | os.PathLike) -> Path:
    """Write a figure as PNG and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", facecolor="white")
    return path


def neuron_traces_figure(
    recording: Recording, n_neurons: int = 16, neurons: Sequence[int] | None = None
) -> Figure:
    """A grid of individual neurons' post-activation traces over the whole episode (the paper's style).

    x: internal tick index over the episode (env step ``t``, tick ``k`` is ``t*K + k``; the top axis reads
    env steps), y: post-activation.  Dots are coloured by tick within the env step, so a neuron that
    oscillates between ticks shows as two interleaved colours; grey vertical lines mark env-step
    boundaries.
    """
    chosen = select_neurons(recording.post, n_neurons, neurons)
    n_steps, n_ticks = recording.n_steps, recording.n_ticks
    n_points = n_steps * n_ticks
    ncols = min(len(chosen), 2 if n_points > 100 else 4)
    nrows = math.ceil(len(chosen) / ncols)
    # Fixed margins in inches (constrained layout costs more than drawing these many small axes).
    width, row_height, top, bottom, left, right, col_gap = 16.0, 1.35, 1.05, 0.95, 0.95, 0.2, 1.0
    height = nrows * row_height + top + bottom
    axis_width = (width - left - right - (ncols - 1) * col_gap) / ncols
    fig = new_figure(width, height, layout=None)
    axes = fig.subplots(nrows, ncols, sharex=True, squeeze=False, gridspec_kw={
        "left": left / width, "right": 1 - right / width, "top": 1 - top / height, "bottom": bottom / height,
        "wspace": col_gap / axis_width, "hspace": 0.28}).ravel()

    x = np.arange(n_points)
    tick_of_point = np.tile(np.arange(n_ticks), n_steps)
    every = max(1, math.ceil(n_steps / MAX_BOUNDARIES))
    boundaries = np.arange(every, n_steps, every) * n_ticks - 0.5
    output_neurons = set(recording.synch_left.tolist()) | set(recording.synch_right.tolist())
    marker_size = 9 if n_points <= 200 else 4

    for ax, neuron in zip(axes, chosen):
        trace = recording.post[:, :, neuron].reshape(-1)
        ax.vlines(boundaries, 0, 1, transform=ax.get_xaxis_transform(), colors="0.85", linewidths=0.6,
                  zorder=0)
        ax.plot(x, trace, color="0.25", linewidth=0.8, zorder=1)
        if n_ticks > 1:
            colours = np.asarray(TICK_COLOURS)[tick_of_point % len(TICK_COLOURS)]
            ax.scatter(x, trace, c=colours, s=marker_size, linewidths=0, zorder=2)
        # The neuron's name as the y label keeps the panel titles free for the top "env step" axis.
        ax.set_ylabel(f"neuron {neuron}" + ("\n(sync output)" if neuron in output_neurons else ""), fontsize=9)
        ax.tick_params(labelsize=8)
        ax.margins(x=0.005)
    for ax in axes[len(chosen):]:
        ax.set_visible(False)
    for ax in axes[(nrows - 1) * ncols:]:
        ax.set_xlabel(f"internal tick index ({n_ticks} per env step)", fontsize=9)
    for ax in axes[:ncols]:
        top = ax.secondary_xaxis("top", functions=(lambda v: v / n_ticks, lambda s: s * n_ticks))
        top.xaxis.set_major_locator(MaxNLocator(integer=True))
        top.set_xlabel("env step", fontsize=9)
        top.tick_params(labelsize=8)

    handles = [Line2D([], [], color="0.85", linewidth=2,
                      label="env-step boundary" + (f" (one in {every})" if every > 1 else ""))]
    if n_ticks > 1:
        handles += [Line2D([], [], marker="o", linestyle="", color=TICK_COLOURS[k % len(TICK_COLOURS)],
                           label=f"tick {k + 1}") for k in range(n_ticks)]
    fig.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 0.0), ncol=len(handles), fontsize=9,
               frameon=False)
    fig.supylabel("post-activation", fontsize=10, x=0.1 / width)
    fig.suptitle(
        f"{recording.env_id}: neuron activation traces over one episode\n"
        f"{len(chosen)} of {recording.n_neurons} neurons (most variable), {n_steps} env steps x {n_ticks} "
        f"internal ticks, return {recording.episode_return:g}",
        fontsize=11,
    )
    return fig


def sync_pca_figure(recording: Recording) -> Figure:
    """The synchronisation vector's trajectory over the episode, projected on its first two PCs.

    One point per internal tick, coloured by env step; consecutive ticks are joined; the first and last
    ticks are marked.
    """
    n_steps, n_ticks = recording.n_steps, recording.n_ticks
    points = recording.sync.reshape(n_steps * n_ticks, -1).astype(np.float64)
    coords, ratios = pca_2d(points)
    time = np.arange(len(points)) / n_ticks  # in env steps

    fig = new_figure(7.5, 6.2)
    ax = fig.subplots()
    ax.plot(coords[:, 0], coords[:, 1], color="0.6", linewidth=0.7, alpha=0.7, zorder=1)
    scatter = ax.scatter(coords[:, 0], coords[:, 1], c=time, cmap="viridis", s=16, linewidths=0, zorder=2)
    ax.scatter(*coords[0], marker="o", s=140, facecolors="none", edgecolors="tab:green", linewidths=2.2,
               zorder=3, label="start (tick 1 of step 0)")
    ax.scatter(*coords[-1], marker="X", s=140, color="tab:red", edgecolors="white", linewidths=1, zorder=3,
               label=f"end (step {n_steps - 1})")
    ax.set_xlabel(f"PC 1 ({100 * ratios[0]:.0f}% of variance)")
    ax.set_ylabel(f"PC 2 ({100 * ratios[1]:.0f}% of variance)")
    # Start and end often lie close together (the agent returns to a resting state): labels set apart
    # in opposite directions keep both readable.
    ax.annotate("start", coords[0], xytext=(-14, 14), textcoords="offset points", ha="right", fontsize=9,
                color="tab:green", arrowprops={"arrowstyle": "-", "color": "tab:green", "linewidth": 0.8})
    ax.annotate("end", coords[-1], xytext=(14, -14), textcoords="offset points", ha="left", va="top",
                fontsize=9, color="tab:red", arrowprops={"arrowstyle": "-", "color": "tab:red", "linewidth": 0.8})
    ax.legend(loc="best", fontsize=9)
    colourbar = fig.colorbar(scatter, ax=ax)
    colourbar.set_label("env step")
    ax.set_title(
        f"{recording.env_id}: synchronisation trajectory (PCA)\n"
        f"{recording.sync.shape[-1]}-d sync vector, {n_steps} env steps x {n_ticks} ticks "
        f"({n_steps * n_ticks} points)",
        fontsize=11,
    )
    return fig
