"""The episode animation: one frame per internal tick, drawn fast by blitting onto a fixed background.

Why blitting: a full matplotlib redraw of a five-panel figure (axes, ticks, labels, colour bars) costs tens
of milliseconds, and a 200-step episode with 2 ticks is 400 frames.  The figure is built and drawn once;
each frame restores that background and redraws only the artists that change (images, bars, lines,
a title), then reads the pixels straight from the Agg canvas.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import numpy as np
from matplotlib.artist import Artist

from ctm_rl.viz.analysis import frame_schedule, select_neurons
from ctm_rl.viz.panels import (
    ActionPanel,
    CurvesPanel,
    FramePanel,
    NeuronHeatmapPanel,
    Panel,
    SyncPanel,
    short_number,
)
from ctm_rl.viz.plots import new_figure
from ctm_rl.viz.recording import Recording

# 12 x 6.8 inches at 80 dpi = 960 x 544 pixels: both multiples of 16, which H.264 encoders want.
FIGSIZE = (12.0, 6.8)
DPI = 80


class DynamicsAnimator:
    """Draws animation frames of one recording: ``render(t, k)`` -> ``(H, W, 3)`` uint8.

    Layout: env frame | neuron heatmap (wide) on top; synchronisation | action probabilities | value and
    certainty below.

    :param recording: the episode.
    :param n_neurons: neurons in the heatmap (the most variable ones, see ``select_neurons``).
    :param neurons: explicit neuron indices instead.
    :param dpi: resolution; the default gives 960 x 544 frames.
    """

    def __init__(self, recording: Recording, n_neurons: int = 16, neurons: Sequence[int] | None = None,
                 dpi: int = DPI):
        self.recording = recording
        chosen = select_neurons(recording.post, n_neurons, neurons)
        # Fixed margins instead of constrained layout: the layout solver alone cost about as much as
        # drawing the whole figure, and the panels' sizes never change.
        self.fig = new_figure(*FIGSIZE, dpi=dpi, layout=None)
        grid = self.fig.add_gridspec(2, 3, width_ratios=[1.0, 1.0, 1.25], height_ratios=[1.1, 1.0], left=0.045,
                                     right=0.945, top=0.9, bottom=0.1, wspace=0.42, hspace=0.36)
        self.panels: list[Panel] = [
            FramePanel(self.fig.add_subplot(grid[0, 0]), recording),
            NeuronHeatmapPanel(self.fig, self.fig.add_subplot(grid[0, 1:]), recording, chosen),
            SyncPanel(self.fig, self.fig.add_subplot(grid[1, 0]), recording),
            ActionPanel(self.fig.add_subplot(grid[1, 1]), recording),
            CurvesPanel(self.fig.add_subplot(grid[1, 2]), recording),
        ]
        self.fig.suptitle(f"{recording.env_id}: the CTM thinking, one frame per internal tick "
                          f"(return {short_number(recording.episode_return)})", fontsize=12)
        self.artists: list[Artist] = [a for panel in self.panels for a in panel.artists]
        # Draw everything static once (animated artists are skipped by ``draw``) and keep it as background.
        canvas = self.fig.canvas
        canvas.draw()
        self.background = canvas.copy_from_bbox(self.fig.bbox)

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        """``(H, W, 3)`` of every frame."""
        width, height = self.fig.canvas.get_width_height()
        return height, width, 3

    def render(self, t: int, k: int) -> np.ndarray:
        """The frame for env step ``t``, tick ``k`` (any order)."""
        canvas = self.fig.canvas
        canvas.restore_region(self.background)
        for panel in self.panels:
            panel.update(t, k)
        for artist in self.artists:
            self.fig.draw_artist(artist)
        return np.asarray(canvas.buffer_rgba())[..., :3].copy()

    def frames(self, schedule: Iterable[tuple[int, int]]) -> Iterator[np.ndarray]:
        """Frames for a sequence of ``(t, k)`` pairs, one at a time (an episode does not fit in memory)."""
        for t, k in schedule:
            yield self.render(t, k)


def animation_frames(recording: Recording, n_neurons: int = 16, max_frames: int | None = None,
                     neurons: Sequence[int] | None = None, dpi: int = DPI) -> Iterator[np.ndarray]:
    """All frames of a recording's animation, following :func:`frame_schedule` (e.g. for TensorBoard)."""
    animator = DynamicsAnimator(recording, n_neurons, neurons, dpi=dpi)
    yield from animator.frames(frame_schedule(recording.n_steps, recording.n_ticks, max_frames))
