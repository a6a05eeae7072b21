"""Time the visualisation of a 200-step episode of a trained masked-CartPole CTM, and make the docs' pictures.

1. Train (or load) a small CTMPPO on CartPole with the velocities zeroed (``CTM/CartPoleNoVel-v1`` when the
   project's ``envs`` package provides it, else CartPole-v1 behind a small masking wrapper), so the
   pictures show learned dynamics rather than random ones.
2. Record one episode (200 steps at most, the paper's masked-CartPole limit) and write all of its media
   (GIF with one frame per tick, neuron traces, synchronisation PCA, ``.npz``), timing each part.

    python benchmarks/visualize_speed.py --train-steps 50000 --model runs/viz/cartpole_ctm.zip
    python benchmarks/visualize_speed.py --model runs/viz/cartpole_ctm.zip --docs   # reuse, copy pictures

The requirement it checks: record + all media of a 200-step episode in under 60 s on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import time
from pathlib import Path

import gymnasium as gym
import imageio.v3 as iio
import numpy as np
import torch
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecNormalize

from ctm_rl import CTMPPO
from ctm_rl.viz import record_episode, write_episode_media

EPISODE_STEPS = 200
# A small CTM that learns masked CartPole within tens of thousands of steps on 2 cores, with 2 ticks
# per env step (so a 200-step episode is 400 animation frames).
POLICY_KWARGS = {"d_model": 64, "d_input": 32, "memory_length": 10, "memory_hidden_dims": 4,
                 "n_synch_out": 16, "iterations": 2}
PPO_KWARGS = {"n_steps": 64, "batch_size": 256, "n_epochs": 4, "learning_rate": 1e-3, "gamma": 0.99,
              "gae_lambda": 0.95, "clip_range": 0.2, "ent_coef": 0.0, "bptt_steps": 16}
N_ENVS = 16


class ZeroVelocities(gym.ObservationWrapper):
    """CartPole without velocities: ``x_dot`` and ``theta_dot`` zeroed (fallback when ``envs`` is absent)."""

    def observation(self, observation: np.ndarray) -> np.ndarray:
        observation = np.array(observation, copy=True)
        observation[[1, 3]] = 0.0
        return observation


def make_env(render_mode: str | None = None, max_episode_steps: int | None = None) -> gym.Env:
    """Masked CartPole, from the project's registry when available."""
    try:
        import envs  # noqa: F401  (registers CTM/*)

        return gym.make("CTM/CartPoleNoVel-v1", render_mode=render_mode, max_episode_steps=max_episode_steps)
    except (ImportError, gym.error.Error):
        return ZeroVelocities(gym.make("CartPole-v1", render_mode=render_mode, max_episode_steps=max_episode_steps))


def train(steps: int, seed: int, path: Path, resume: bool = False) -> CTMPPO:
    """Train the small CTM (or, with ``resume``, the one saved at ``path``) and save it; prints throughput."""
    vec_env = make_vec_env(lambda: make_env(max_episode_steps=EPISODE_STEPS), n_envs=N_ENVS, seed=seed)
    # Normalised rewards, as the paper trained (observations stay raw, so the saved model needs no stats).
    vec_env = VecNormalize(vec_env, norm_obs=False, norm_reward=True)
    if resume:
        model = CTMPPO.load(path, env=vec_env, device="cpu")
    else:
        model = CTMPPO("CTMPolicy", vec_env, policy_kwargs=POLICY_KWARGS, seed=seed, verbose=1, device="cpu",
                       **PPO_KWARGS)
    start = time.perf_counter()
    model.learn(steps, reset_num_timesteps=not resume)
    elapsed = time.perf_counter() - start
    print(f"trained {steps} steps in {elapsed:.0f} s ({steps / elapsed:.0f} env steps/s), "
          f"{model.num_timesteps} in all")
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    return model


def copy_docs_pictures(paths: list[Path], docs_dir: Path, max_gif_bytes: int = 3_000_000) -> None:
    """Put one picture of each kind in ``docs/img`` as ``viz_*`` (the GIF only if it is small enough)."""
    animation, traces, pca, _ = paths
    docs_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(traces, docs_dir / "viz_neurons.png")
    shutil.copy(pca, docs_dir / "viz_sync_pca.png")
    if animation.suffix == ".gif":
        frames = iio.imread(animation, index=None)
        iio.imwrite(docs_dir / "viz_frame.png", frames[int(len(frames) * 0.6)])
        if animation.stat().st_size < max_gif_bytes:
            shutil.copy(animation, docs_dir / "viz_episode.gif")
        else:
            print(f"{animation} is {animation.stat().st_size / 1e6:.1f} MB: not copied to the docs")
    print(f"pictures copied to {docs_dir}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path("runs/viz/cartpole_ctm.zip"),
                        help="trained model: loaded if it exists, else trained and saved there")
    parser.add_argument("--train-steps", type=int, default=50_000)
    parser.add_argument("--retrain", action="store_true", help="train from scratch even if --model exists")
    parser.add_argument("--extra-steps", type=int, default=0, help="continue training an existing --model")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/viz/media"))
    parser.add_argument("--format", choices=("gif", "mp4"), default="gif")
    parser.add_argument("--neurons", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--docs", action="store_true", help="copy the pictures to docs/img/viz_*")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    if args.model.exists() and not args.retrain:
        model = train(args.extra_steps, args.seed, args.model, resume=True) if args.extra_steps else \
            CTMPPO.load(args.model, device="cpu")
    else:
        model = train(args.train_steps, args.seed, args.model)

    env = make_env(render_mode="rgb_array", max_episode_steps=EPISODE_STEPS)
    load_before = os.getloadavg()[0]
    cpu_start, start = time.process_time(), time.perf_counter()
    recording = record_episode(model, env, seed=args.seed)
    recorded = time.perf_counter()
    paths = write_episode_media(recording, args.out, "cartpole_novel", fmt=args.format, n_neurons=args.neurons)
    done, cpu_done = time.perf_counter(), time.process_time()
    env.close()

    print(f"machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, torch threads {torch.get_num_threads()}")
    print(f"episode: {recording.n_steps} env steps x {recording.n_ticks} ticks = "
          f"{recording.n_steps * recording.n_ticks} animation frames, return {recording.episode_return:g}")
    print(f"record_episode:      {recorded - start:6.1f} s")
    print(f"write_episode_media: {done - recorded:6.1f} s")
    print(f"total:               {done - start:6.1f} s  (requirement: < 60 s)")
    # Wall time depends on what else runs; CPU time of this process does much less.
    print(f"CPU time:            {cpu_done - cpu_start:6.1f} s;  1-min load average before/after: "
          f"{load_before:.1f} / {os.getloadavg()[0]:.1f}")
    for path in paths:
        print(f"  {path}  {path.stat().st_size / 1e6:.2f} MB")
    if args.docs:
        copy_docs_pictures(paths, Path(__file__).resolve().parents[1] / "docs" / "img")


if __name__ == "__main__":
    main()
