"""The LSTM's counterpart of ``ctm-rl visualize``'s neuron traces, for docs/REPRODUCTION.md (issue 20).

Plays one deterministic episode of a trained ``lstm`` run (sb3-contrib ``RecurrentPPO``) and draws its
most variable hidden units (the actor LSTM's ``h``) over the episode, in the same layout and with the
same unit selection as the CTM's ``*_neurons.png``, so that the two can be set side by side.

    python benchmarks/lstm_hidden.py runs/paper/acrobot/lstm/seed_0 --out docs/img/paper_acrobot_lstm_hidden.png
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np


def record_hidden(run: Path, seed: int) -> tuple[np.ndarray, float, str]:
    """``(hidden states (T, H), episode return, env id)`` of one deterministic episode."""
    from agents.loading import load_agent

    loaded = load_agent(run, seed=seed, device="cpu")
    model, env = loaded.model, loaded.env
    obs = env.reset()
    state, start, hidden, total = None, np.ones(1, dtype=bool), [], 0.0
    while True:
        action, state = model.predict(obs, state=state, episode_start=start, deterministic=True)
        hidden.append(state[0][0, 0].copy())  # (layers, envs, H): the actor LSTM's h after this step
        obs, _, done, infos = env.step(action)
        total += float(infos[0].get("episode", {}).get("r", 0.0)) if done[0] else 0.0
        start = done
        if done[0]:
            break
    return np.array(hidden), total, loaded.env_id


def plot(hidden: np.ndarray, episode_return: float, env_id: str, n_units: int, path: Path) -> None:
    from ctm_rl.viz.analysis import select_neurons
    from ctm_rl.viz.plots import new_figure, save_png

    chosen = select_neurons(hidden[:, None, :], n_units)
    ncols = 2
    nrows = math.ceil(len(chosen) / ncols)
    fig = new_figure(16.0, nrows * 1.35 + 2.0)
    axes = fig.subplots(nrows, ncols, sharex=True, squeeze=False).ravel()
    for ax, unit in zip(axes, chosen):
        ax.plot(np.arange(len(hidden)), hidden[:, unit], color="0.25", linewidth=0.8, marker="o", markersize=2)
        ax.set_ylabel(f"unit {unit}", fontsize=9)
        ax.tick_params(labelsize=8)
    for ax in axes[len(chosen):]:
        ax.set_visible(False)
    for ax in axes[-ncols:]:
        ax.set_xlabel("env step", fontsize=9)
    fig.supylabel("hidden state h", fontsize=10)
    fig.suptitle(f"{env_id}: LSTM hidden units over one episode\n{len(chosen)} of {hidden.shape[1]} units "
                 f"(most variable), {len(hidden)} env steps, return {episode_return:g}", fontsize=11)
    save_png(fig, path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="an lstm run directory")
    parser.add_argument("--out", type=Path, required=True, help="the .png to write")
    parser.add_argument("--seed", type=int, default=0, help="env seed (default 0, as ctm-rl visualize)")
    parser.add_argument("--units", type=int, default=16, help="hidden units to draw (default 16)")
    args = parser.parse_args()
    hidden, episode_return, env_id = record_hidden(args.run, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    plot(hidden, episode_return, env_id, args.units, args.out)
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
