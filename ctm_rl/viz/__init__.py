"""Watch a Continuous Thought Machine think: record episodes, draw neuron dynamics, log them in training.

    from ctm_rl.viz import record_episode, write_episode_media
    recording = record_episode(model, gym.make("CartPole-v1", render_mode="rgb_array"), seed=0)
    write_episode_media(recording, "viz", "episode_0")      # gif, neuron traces, sync PCA, .npz

Modules, one job each:

* ``recording``   -- ``record_episode`` and the ``Recording`` (``.npz`` save/load);
* ``env_adapter`` -- one episode's interaction with a ``gym.Env`` or a single-env ``VecEnv``;
* ``heads``       -- action probabilities, certainty and value of every internal tick;
* ``labels``      -- action names (MiniGrid, CartPole, ...);
* ``analysis``    -- neuron choice, synchronisation matrices, PCA, frame schedule (numpy only);
* ``plots``       -- the static PNGs (neuron traces, synchronisation PCA);
* ``panels`` / ``animation`` / ``writers`` -- the per-tick animation, drawn by blitting, as GIF or MP4;
* ``media``       -- ``write_episode_media``: every file of one episode;
* ``callback``    -- ``NeuralDynamicsCallback`` for TensorBoard during training.

Drawing uses matplotlib's Agg canvas directly (never ``pyplot``): no window opens and the caller's
backend is untouched.
"""

from ctm_rl.viz.analysis import frame_schedule, pca_2d, select_neurons, sync_matrix
from ctm_rl.viz.animation import DynamicsAnimator, animation_frames
from ctm_rl.viz.callback import NeuralDynamicsCallback, contact_sheet
from ctm_rl.viz.media import write_episode_media
from ctm_rl.viz.plots import figure_to_array, neuron_traces_figure, sync_pca_figure
from ctm_rl.viz.recording import Recording, record_episode

__all__ = [
    "DynamicsAnimator",
    "NeuralDynamicsCallback",
    "Recording",
    "animation_frames",
    "contact_sheet",
    "figure_to_array",
    "frame_schedule",
    "neuron_traces_figure",
    "pca_2d",
    "record_episode",
    "select_neurons",
    "sync_matrix",
    "sync_pca_figure",
    "write_episode_media",
]
