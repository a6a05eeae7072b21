"""The animation's panels.  Each draws its static parts once and exposes the few artists that change.

A panel's ``update(t, k)`` moves its artists to env step ``t``, tick ``k``, and must depend on nothing but
``(t, k)``: frames can then be drawn in any order (the GIF palette is built from a few chosen frames first)
or skipped (``max_frames``).  All axis and colour limits are fixed from the whole episode up front, so
the static background never needs redrawing.
"""

from __future__ import annotations

import numpy as np
from matplotlib import colormaps
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

from ctm_rl.viz.analysis import pair_layout, robust_limit, sync_matrix, value_range
from ctm_rl.viz.heads import CONTINUOUS, DISCRETE
from ctm_rl.viz.recording import Recording

DIVERGING = colormaps["RdBu_r"]
NOT_YET = "#f0f0f0"  # light grey: ticks not reached yet
BAR_COLOUR, CHOSEN_COLOUR = "#9ecae1", "#d95f02"


class Panel:
    """Base class: ``artists`` are redrawn every frame, everything else belongs to the background."""

    artists: list[Artist]

    def update(self, t: int, k: int) -> None:
        raise NotImplementedError

    def _animate(self, *artists: Artist) -> None:
        for artist in artists:
            artist.set_animated(True)
        self.artists.extend(artists)

    def _curtain(self, ax: Axes, colour: str) -> Rectangle:
        """A patch hiding everything right of the current tick (its left edge moves with ``set_x``).

        Drawing a whole-episode picture once into the background and uncovering it tick by tick costs one
        rectangle per frame instead of re-colouring and re-sampling an image or re-drawing lines.  The
        spines are redrawn over it so the frame of the axes stays intact.
        """
        low, high = ax.get_xlim()
        curtain = Rectangle((low, 0), abs(high - low) + 1, 1, transform=ax.get_xaxis_transform(),
                            facecolor=colour, edgecolor="none", zorder=10)
        ax.add_patch(curtain)
        self._animate(curtain, *ax.spines.values())
        return curtain


class FramePanel(Panel):
    """The env as rendered (or, if it renders nothing, the observation) at the current env step."""

    def __init__(self, ax: Axes, recording: Recording):
        self.artists = []
        self.recording = recording
        self.images = recording.frames if recording.frames is not None else _observation_images(recording)
        # Ticks off but the frame kept: white renders (CartPole) would otherwise melt into the figure.
        ax.set_xticks([])
        ax.set_yticks([])
        if recording.frames is None and self.images is not None:
            ax.set_xlabel("observation (the env renders no frames)", fontsize=8)
        if self.images is None:
            ax.text(0.5, 0.5, "no rendered frames\n(make the env with render_mode='rgb_array')",
                    ha="center", va="center", fontsize=9, transform=ax.transAxes)
            self.image = None
            return
        self.image = ax.imshow(self.images[0], interpolation="nearest", aspect="equal")
        if self.images.ndim == 3:  # one value per cell (a vector strip, an index grid): a colour map
            if self.images.min() >= 0:
                self.image.set_cmap("viridis")
                self.image.set_clim(0, max(float(self.images.max()), 1e-6))
            else:
                limit = robust_limit(self.images)
                self.image.set_cmap("coolwarm")
                self.image.set_clim(-limit, limit)
        self.title = ax.set_title(" " * 40, fontsize=10)
        # The image is redrawn every frame; its axes frame must be redrawn over it.
        self._animate(self.image, *ax.spines.values(), self.title)

    def update(self, t: int, k: int) -> None:
        if self.image is None:
            return
        self.image.set_data(self.images[t])
        rec = self.recording
        self.title.set_text(f"env step {t + 1}/{rec.n_steps}  |  tick {k + 1}/{rec.n_ticks}  |  "
                            f"return {short_number(rec.rewards[:t].sum())}")


class NeuronHeatmapPanel(Panel):
    """Selected neurons' post-activations over all ticks so far (rows: neurons, columns: ticks)."""

    def __init__(self, fig: Figure, ax: Axes, recording: Recording, neurons: np.ndarray):
        self.artists = []
        self.n_ticks = recording.n_ticks
        traces = recording.post[:, :, neurons].reshape(-1, len(neurons)).T  # (n, T*K)
        # Neurons live on very different scales; scaling each row by its own peak keeps every row readable.
        peak = np.abs(traces).max(axis=1, keepdims=True)
        full = traces / np.where(peak > 0, peak, 1.0)
        # The whole episode is drawn once (background); a grey curtain hides the ticks not reached yet.
        self.image = ax.imshow(full, aspect="auto", cmap=DIVERGING, vmin=-1, vmax=1, interpolation="nearest")
        ax.set_yticks(range(len(neurons)), [str(n) for n in neurons], fontsize=7)
        ax.set_ylabel("neuron")
        ax.set_xlabel(f"internal tick index ({self.n_ticks} per env step)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title("post-activations of the most variable neurons (each row scaled to its peak)", fontsize=10)
        fig.colorbar(self.image, ax=ax, fraction=0.04, pad=0.01).set_label("activation / peak", fontsize=8)
        self.curtain = self._curtain(ax, NOT_YET)
        self.cursor = ax.axvline(0, color="black", linewidth=0.8)
        self._animate(self.cursor)

    def update(self, t: int, k: int) -> None:
        now = t * self.n_ticks + k
        self.curtain.set_x(now + 0.5)
        self.cursor.set_xdata([now, now])


class SyncPanel(Panel):
    """The output synchronisation at the current tick: a symmetric matrix, or the pair vector."""

    def __init__(self, fig: Figure, ax: Axes, recording: Recording):
        self.artists = []
        self.sync = recording.sync
        limit = robust_limit(recording.sync)
        self.side = pair_layout(recording.synch_left, recording.synch_right, recording.neuron_select_type)
        if self.side is None:  # random-pairing: n independent pairs, no matrix to rebuild
            n = self.sync.shape[-1]
            self.bars = ax.bar(np.arange(n), np.zeros(n), color=BAR_COLOUR)
            ax.set_ylim(-limit, limit)
            ax.axhline(0, color="0.5", linewidth=0.6)
            ax.set_xlabel("neuron pair (random pairing)")
            ax.set_ylabel("synchronisation")
            self._animate(*self.bars)
        else:
            self.image = ax.imshow(np.zeros((self.side, self.side)), cmap=DIVERGING, vmin=-limit, vmax=limit,
                                   interpolation="nearest")
            # Colour every tick's matrix once: RGBA bytes skip matplotlib's per-frame normalisation.
            self.colours = self.image.to_rgba(sync_matrix(self.sync, self.side), bytes=True)
            labels = _neuron_labels(recording, self.side)
            step = max(1, self.side // 8)
            ax.set_xticks(range(0, self.side, step), labels[::step], fontsize=7)
            ax.set_yticks(range(0, self.side, step), labels[::step], fontsize=7)
            ax.set_xlabel("output neuron")
            ax.set_ylabel("output neuron")
            fig.colorbar(self.image, ax=ax, fraction=0.046, pad=0.03).ax.tick_params(labelsize=7)
            self._animate(self.image)
        ax.set_title("output synchronisation", fontsize=10)

    def update(self, t: int, k: int) -> None:
        vector = self.sync[t, k]
        if self.side is None:
            for bar, height in zip(self.bars, vector):
                bar.set_height(height)
        else:
            self.image.set_data(self.colours[t, k])


class ActionPanel(Panel):
    """What the policy would do if it acted on this tick's synchronisation; the taken action highlighted."""

    def __init__(self, ax: Axes, recording: Recording):
        self.artists = []
        self.recording = recording
        self.kind = recording.meta.get("action_kind", DISCRETE)
        probs = recording.tick_action_probs
        names = recording.action_names
        n = probs.shape[-1]
        self.bars = ax.bar(np.arange(n), np.zeros(n), color=BAR_COLOUR, edgecolor="none")
        # Rotate names only when they would collide (about 40 characters fit under the panel).
        rotate = sum(len(name) + 2 for name in names) > 40
        ax.set_xticks(np.arange(n), names, rotation=35 if rotate else 0, ha="right" if rotate else "center",
                      fontsize=8)
        if self.kind == CONTINUOUS:
            ax.set_ylim(*value_range(probs))
            ax.axhline(0, color="0.5", linewidth=0.6)
            ax.set_ylabel("mean action")
            ax.set_title("action (distribution mean) at this tick", fontsize=10)
        else:
            ax.set_ylim(0, 1.12)
            ax.set_ylabel("probability")
            ax.set_title("action probabilities at this tick", fontsize=10)
        self.labels = [ax.text(i, 0, "", ha="center", va="bottom", fontsize=7) for i in range(n)] if n <= 8 else []
        if self.kind == DISCRETE:  # said in the title: a legend would collide with tall bars
            ax.set_title("action probabilities this tick (orange: taken)", fontsize=9)
        self._animate(*self.bars, *self.labels)

    def update(self, t: int, k: int) -> None:
        heights = self.recording.tick_action_probs[t, k]
        chosen = int(self.recording.actions[t]) if self.kind == DISCRETE else -1
        for i, (bar, height) in enumerate(zip(self.bars, heights)):
            bar.set_height(height)
            bar.set_color(CHOSEN_COLOUR if i == chosen else BAR_COLOUR)
        for label, height in zip(self.labels, heights):
            label.set_position((label.get_position()[0], max(height, 0.0)))
            label.set_text(f"{height:.2f}")


class CurvesPanel(Panel):
    """Value (left axis) and certainty (right axis) of every tick so far."""

    def __init__(self, ax: Axes, recording: Recording):
        self.artists = []
        self.n_ticks = recording.n_ticks
        self.values = recording.tick_values.reshape(-1)
        self.certainty = recording.certainty.reshape(-1)
        x_max = max(1, len(self.values) - 1)
        ax.set_xlim(0, x_max)
        ax.set_ylim(*value_range(self.values))
        ax.set_xlabel("internal tick index")
        ax.set_ylabel("value", color="tab:blue")
        ax.tick_params(axis="y", colors="tab:blue")
        right = ax.twinx()
        right.set_ylim(-0.02, 1.02)
        right.set_ylabel("certainty", color="tab:red")
        right.tick_params(axis="y", colors="tab:red")
        # Both whole curves go into the background; a white curtain uncovers them tick by tick.
        ax.plot(np.arange(len(self.values)), self.values, color="tab:blue", linewidth=1.2)
        right.plot(np.arange(len(self.certainty)), self.certainty, color="tab:red", linewidth=1.2)
        ax.set_title("value (blue) and certainty (red) per tick", fontsize=10)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        self.curtain = self._curtain(right, "white")
        if not np.isfinite(self.certainty).any():
            self._animate(right.text(0.5, 0.5, "certainty: n/a\n(continuous actions)", ha="center", va="center",
                                     fontsize=8, color="tab:red", transform=right.transAxes, zorder=11))
        self.cursor = right.axvline(0, color="black", linewidth=0.8, zorder=12)
        self._animate(self.cursor)

    def update(self, t: int, k: int) -> None:
        now = t * self.n_ticks + k
        self.curtain.set_x(now)
        self.cursor.set_xdata([now, now])


def short_number(x: float) -> str:
    """A return or reward for a title: integers as integers, others with one decimal."""
    return f"{x:.0f}" if float(x).is_integer() else f"{x:.1f}"


def _neuron_labels(recording: Recording, side: int) -> list[str]:
    """Tick labels of the synchronisation matrix.

    With ``first-last`` selection row ``i`` and column ``i`` are the same neuron, so its global index is
    shown; with ``random`` selection rows pair "left" with "right" neurons and the mirrored matrix has no
    single neuron per row, so positions are shown.
    """
    if recording.neuron_select_type != "first-last":
        return [str(i) for i in range(side)]
    first_of_row = np.concatenate(([0], np.cumsum(side - np.arange(side))[:-1]))
    return [str(n) for n in recording.synch_left[first_of_row]]


def _observation_images(recording: Recording) -> np.ndarray | None:
    """Something to show when the env renders nothing: image observations as they are, vectors as strips."""
    obs = recording.observations
    if isinstance(obs, dict):
        return None
    if obs.ndim == 4 and obs.shape[-1] == 3 and obs.dtype.kind in "iu" and obs.max() < 32:
        return obs[..., 0].astype(np.float32)  # a MiniGrid (object, colour, state) grid: show the objects
    if obs.ndim == 4 and obs.shape[-1] in (1, 3):
        return obs if obs.shape[-1] == 3 else obs[..., 0]
    if obs.ndim == 4 and obs.shape[1] in (1, 3):  # channel-first pixels
        return np.moveaxis(obs, 1, -1) if obs.shape[1] == 3 else obs[:, 0]
    return obs.reshape(len(obs), 1, -1).astype(np.float32)
