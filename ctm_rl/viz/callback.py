"""A training callback that periodically records an episode and logs the CTM's neural dynamics.

Logged to TensorBoard, at the training step they were recorded:

* ``{prefix}/neurons``: the neuron activation traces (the PNG of ``write_episode_media``);
* ``{prefix}/sync_pca``: the synchronisation trajectory;
* ``{prefix}/episode``: the animation as a video when ``moviepy`` is installed (TensorBoard's video
  support needs it); otherwise ``{prefix}/episode_frames``, one image holding a grid of evenly spaced
  animation frames (a "contact sheet"), so no heavy dependency is needed;
* scalars ``{prefix}/episode_return``, ``{prefix}/episode_length`` and ``{prefix}/mean_certainty`` through
  the ordinary logger (so they also reach CSV/stdout at the next dump).

Images are written straight to the logger's TensorBoard output with SB3's ``Image``/``Video`` values:
going through ``logger.record`` would hold them until the algorithm's next ``dump`` (and an image
recorded twice before a dump would lose the first one).
"""

from __future__ import annotations

import importlib.util
import math
import os
import warnings
from pathlib import Path

import gymnasium as gym
import imageio.v3 as iio
import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import Image, TensorBoardOutputFormat, Video
from stable_baselines3.common.vec_env import VecEnv

from ctm_rl.viz.analysis import block_mean
from ctm_rl.viz.animation import animation_frames
from ctm_rl.viz.media import write_episode_media
from ctm_rl.viz.plots import figure_to_array, neuron_traces_figure, sync_pca_figure
from ctm_rl.viz.recording import Recording, record_episode


class NeuralDynamicsCallback(BaseCallback):
    """Every ``every_n_steps`` training steps, record one episode on ``eval_env`` and log its dynamics.

    :param eval_env: a ``gym.Env`` (``render_mode="rgb_array"``) or a single-env ``VecEnv``.
    :param every_n_steps: env steps (``model.num_timesteps``) between two recordings.
    :param n_neurons: neurons drawn in the traces and the animation's heatmap.
    :param max_frames: cap on the animation's frames (whole env steps are dropped evenly beyond it).
    :param fps: animation speed, frames (ticks) per second.
    :param sheet_frames: frames in the contact-sheet image logged when ``moviepy`` is missing.
    :param deterministic: act greedily in the recorded episode.
    :param seed: reset seed of every recorded episode (the same start each time makes them comparable).
    :param max_steps: cap on the recorded episode's length.
    :param save_dir: also write ``write_episode_media``'s files there, named ``step_<num_timesteps>``.
    :param fmt: animation format of those files.
    :param log_prefix: TensorBoard tag prefix.
    :param verbose: 1 prints a line per recording.
    """

    def __init__(
        self,
        eval_env: gym.Env | VecEnv,
        every_n_steps: int,
        n_neurons: int = 16,
        max_frames: int | None = 64,
        fps: float = 8.0,
        sheet_frames: int = 6,
        deterministic: bool = True,
        seed: int | None = 0,
        max_steps: int | None = 500,
        save_dir: str | os.PathLike | None = None,
        fmt: str = "gif",
        log_prefix: str = "dynamics",
        verbose: int = 0,
    ):
        super().__init__(verbose)
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps must be positive, got {every_n_steps}")
        self.eval_env = eval_env
        self.every_n_steps = every_n_steps
        self.n_neurons = n_neurons
        self.max_frames = max_frames
        self.fps = fps
        self.sheet_frames = sheet_frames
        self.deterministic = deterministic
        self.seed = seed
        self.max_steps = max_steps
        self.save_dir = Path(save_dir) if save_dir is not None else None
        self.fmt = fmt
        self.log_prefix = log_prefix
        self.last_recording: Recording | None = None
        self._last_logged_at = 0
        self._warned_no_tensorboard = False

    def _on_step(self) -> bool:
        if self.num_timesteps - self._last_logged_at >= self.every_n_steps:
            self._last_logged_at = self.num_timesteps
            self.log_dynamics()
        return True

    def log_dynamics(self) -> Recording:
        """Record one episode now and log it (also usable outside training, e.g. after ``learn``)."""
        recording = record_episode(self.model, self.eval_env, seed=self.seed, deterministic=self.deterministic,
                                   max_steps=self.max_steps)
        self.last_recording = recording
        prefix = self.log_prefix
        self.logger.record(f"{prefix}/episode_return", recording.episode_return)
        self.logger.record(f"{prefix}/episode_length", recording.n_steps)
        certainty = recording.certainty[:, -1]
        if np.isfinite(certainty).any():
            self.logger.record(f"{prefix}/mean_certainty", float(np.nanmean(certainty)))

        writers = [f for f in self.logger.output_formats if isinstance(f, TensorBoardOutputFormat)]
        # With a save_dir the pictures are drawn once, for the files, and TensorBoard gets them read back.
        saved = None
        if self.save_dir is not None:
            saved = write_episode_media(recording, self.save_dir, f"step_{self.num_timesteps}", self.fmt,
                                        self.n_neurons, fps=self.fps, max_frames=self.max_frames)
        if writers:
            self._write_tensorboard(writers, self._media_values(recording, saved))
        elif not self._warned_no_tensorboard:
            self._warned_no_tensorboard = True
            warnings.warn("NeuralDynamicsCallback: no TensorBoard output (pass tensorboard_log to the model); "
                          "images are not logged", stacklevel=2)
        if self.verbose >= 1:
            print(f"NeuralDynamicsCallback: step {self.num_timesteps}, episode of {recording.n_steps} steps, "
                  f"return {recording.episode_return:g}")
        return recording

    def _media_values(self, recording: Recording, saved: list[Path] | None) -> dict[str, object]:
        prefix = self.log_prefix
        if saved is not None:
            animation, traces_png, pca_png, _ = saved
            traces, pca = iio.imread(traces_png)[..., :3], iio.imread(pca_png)[..., :3]
            frames = list(iio.imread(animation, index=None)[..., :3])
        else:
            traces = figure_to_array(neuron_traces_figure(recording, self.n_neurons))
            pca = figure_to_array(sync_pca_figure(recording))
            frames = list(animation_frames(recording, self.n_neurons, self.max_frames))
        values: dict[str, object] = {
            f"{prefix}/neurons": Image(traces, "HWC"),
            f"{prefix}/sync_pca": Image(pca, "HWC"),
        }
        if importlib.util.find_spec("moviepy") is not None:
            video = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).unsqueeze(0)  # (1, T, C, H, W)
            values[f"{prefix}/episode"] = Video(video, fps=self.fps)
        else:
            values[f"{prefix}/episode_frames"] = Image(contact_sheet(frames, self.sheet_frames), "HWC")
        return values

    def _write_tensorboard(self, writers: list[TensorBoardOutputFormat], values: dict[str, object]) -> None:
        excluded = {key: None for key in values}
        for writer in writers:
            writer.write(values, excluded, self.num_timesteps)


def contact_sheet(frames: list[np.ndarray], n_frames: int = 6, columns: int = 2, scale: int = 1) -> np.ndarray:
    """One image of ``n_frames`` evenly spaced frames in a grid, each shrunk ``scale`` times (block mean).

    Full size by default: at half size the panels' labels are no longer readable in TensorBoard.
    """
    picks = np.unique(np.linspace(0, len(frames) - 1, min(n_frames, len(frames))).round().astype(int))
    small = [block_mean(frames[i], scale) for i in picks]
    height, width, _ = small[0].shape
    columns = min(columns, len(small))
    rows = math.ceil(len(small) / columns)
    gap = 4
    sheet = np.full((rows * height + (rows - 1) * gap, columns * width + (columns - 1) * gap, 3), 255, np.uint8)
    for i, image in enumerate(small):
        row, col = divmod(i, columns)
        sheet[row * (height + gap):row * (height + gap) + height, col * (width + gap):col * (width + gap) + width] = image
    return sheet

