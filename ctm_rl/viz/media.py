"""Write every picture of one recorded episode: animation, neuron traces, synchronisation PCA, ``.npz``."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ctm_rl.viz.analysis import frame_schedule
from ctm_rl.viz.animation import DynamicsAnimator
from ctm_rl.viz.plots import neuron_traces_figure, save_png, sync_pca_figure
from ctm_rl.viz.recording import Recording
from ctm_rl.viz.writers import check_format, write_gif, write_mp4


def write_episode_media(
    recording: Recording,
    out_dir: str | os.PathLike,
    stem: str,
    fmt: str = "gif",
    n_neurons: int = 16,
    *,
    fps: float = 10.0,
    max_frames: int | None = None,
    neurons: Sequence[int] | None = None,
) -> list[Path]:
    """Write the media of one episode into ``out_dir``, named after ``stem``.

    * ``{stem}.{fmt}``: the animation, one frame per internal tick (``n_steps * n_ticks`` frames; with
      ``max_frames``, whole env steps are dropped at even spacing, see ``frame_schedule``);
    * ``{stem}_neurons.png``: the activation traces of ``n_neurons`` neurons over the episode;
    * ``{stem}_sync_pca.png``: the synchronisation trajectory projected to 2-D;
    * ``{stem}.npz``: the recording itself (``Recording.load`` reads it back).

    :param fmt: ``"gif"`` (always available) or ``"mp4"`` (needs ``imageio-ffmpeg``; checked before
        anything is drawn).
    :param n_neurons: neurons drawn in the heatmap and the traces (the most variable ones).
    :param fps: animation frames (ticks) per second.
    :param max_frames: cap on the animation's frames.
    :param neurons: explicit neuron indices instead of the most variable ones.
    :return: the paths written, in the order above.
    """
    check_format(fmt)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    schedule = frame_schedule(recording.n_steps, recording.n_ticks, max_frames)
    animator = DynamicsAnimator(recording, n_neurons, neurons)
    animation_path = out_dir / f"{stem}.{fmt}"
    if fmt == "gif":
        # The palette comes from the first, middle and last frames: together they hold every colour the
        # panels use (uncovered and covered heatmap, all bars, the env's early and late look).
        samples = [animator.render(*schedule[i]) for i in sorted({0, len(schedule) // 2, len(schedule) - 1})]
        if recording.frames is not None:
            # The env's own frames too: their small objects (a pole, an agent) are few pixels of a figure
            # and would otherwise lose their exact colours to the colour maps.
            samples += [recording.frames[t] for t in sorted({0, recording.n_steps // 2, recording.n_steps - 1})]
        write_gif(animator.frames(schedule), animation_path, fps, samples)
    else:
        write_mp4(animator.frames(schedule), animation_path, fps)

    traces_path = save_png(neuron_traces_figure(recording, n_neurons, neurons), out_dir / f"{stem}_neurons.png")
    pca_path = save_png(sync_pca_figure(recording), out_dir / f"{stem}_sync_pca.png")
    npz_path = recording.save(out_dir / f"{stem}.npz")
    return [animation_path, traces_path, pca_path, npz_path]
