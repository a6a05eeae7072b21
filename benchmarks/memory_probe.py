"""Does a trained agent hold the T-maze cue?  Decode the cue from its recurrent state along the corridor.

For docs/MEMORY.md (issue 19).  Plays ``--episodes`` episodes of each given ``ctm`` or ``lstm`` run on its
``CTM/Memory-L<N>`` env (deterministic actions, env seeds 0, 1, ...), and records after every env step the
agent's whole recurrent state: the CTM's pre- and post-activation histories, the LSTM actor's ``(h, c)``.
The cue (key or ball) is read from the env.  At each step ``t``, a linear probe (ridge regression,
leave-one-out) predicts the cue from the states at ``t`` of the episodes that last that long (balanced
accuracy: 50% is chance).  The same probe on the step's observation is the control: the cue is in view at
step 0 only, so from step 1 on, until the agent looks into the arm it chose, anything above chance in the
state is memory.

    python benchmarks/memory_probe.py runs/memory/L4/runs/CTM-Memory-L4-v0/{ctm/seed_1,ctm/seed_0,lstm/seed_0} \\
        --episodes 100 --out docs/img/memory_probe_L4.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np


def reset_reference(env: gym.Env, seed: int) -> tuple[str, np.ndarray]:
    """Reset ``env`` (a plain ``gym.make`` of the agent's env) with ``seed``: the cue's object type of that
    episode, and its first observation as one vector (as ``FlattenObservation``, which the LSTM's env has,
    makes it)."""
    obs, _ = env.reset(seed=seed)
    unwrapped = env.unwrapped
    return unwrapped.grid.get(*unwrapped._cue_pos).type, as_vector(obs, env.observation_space)


def as_vector(obs: dict[str, np.ndarray] | np.ndarray, space: gym.spaces.Space, batched: bool = False) -> np.ndarray:
    """An observation as one vector, in ``gym.spaces.flatten``'s order; with ``batched``, the first env's of
    a VecEnv's batch (which is flat already when the agent's env flattens it)."""
    if batched:
        obs = {key: value[0] for key, value in obs.items()} if isinstance(obs, dict) else obs[0]
    if isinstance(obs, dict):
        obs = gym.spaces.flatten(space, obs)
    return np.asarray(obs, dtype=float)


def play(run: Path, episodes: int) -> tuple[str, str, list[dict[str, np.ndarray]]]:
    """``(agent, env id, per episode: cue, states (T, F), images (T, ...), success)``."""
    from agents.loading import load_agent

    loaded = load_agent(run, seed=0, device="cpu")
    model, env = loaded.model, loaded.env
    agent = loaded.config.agent
    reference = gym.make(loaded.env_id)
    played = []
    for seed in range(episodes):
        cue, first_observation = reset_reference(reference, seed)
        env.seed(seed)
        obs = env.reset()
        if not np.array_equal(as_vector(obs, reference.observation_space, batched=True), first_observation):
            raise RuntimeError(f"{run}: the agent's env and a fresh {loaded.env_id} disagree at seed {seed}")
        state, start, states, images, reward = None, np.ones(1, dtype=bool), [], [], 0.0
        while True:
            images.append(as_vector(obs, reference.observation_space, batched=True))
            action, state = model.predict(obs, state=state, episode_start=start, deterministic=True)
            # The whole recurrent state the next step starts from: the CTM's pre- and post-activation
            # histories, (envs, D, M) each; the LSTM actor's (h, c), (layers, envs, H) each.
            states.append(np.concatenate([np.asarray(part)[0].ravel() if agent == "ctm" else
                                          np.asarray(part)[:, 0].ravel() for part in state]))
            obs, rewards, done, _ = env.step(action)
            reward += float(rewards[0])
            start = done
            if done[0]:
                break
        played.append({"cue": cue, "states": np.array(states), "images": np.array(images), "success": reward > 0})
    reference.close()
    return agent, loaded.env_id, played


def loo_linear_probe(features: np.ndarray, labels: np.ndarray, flat: float = 1e-3) -> float:
    """Leave-one-out balanced accuracy (the mean over the two cues of the share decoded right: a probe that
    always says the same cue scores 50% whatever the cues' shares) of a ridge-regression probe on the
    standardised features; NaN unless both cues have two episodes or more.

    Features that barely vary (std below ``flat``: activations and observations are of order 0.1-10) are
    left out, since standardising would blow them up to the weight of one that carries the cue.  The ridge
    penalty equals the number of features, a fixed, moderate shrinkage (not tuned on the held-out episode).
    """
    classes = sorted(set(labels.tolist()))
    if len(classes) != 2 or min(np.sum(labels == c) for c in classes) < 2:
        return float("nan")
    y = np.where(labels == classes[1], 1.0, -1.0)
    x = features[:, features.std(0) > flat]
    if x.shape[1] == 0:
        return 0.5
    predicted = np.empty(len(x))
    for i in range(len(x)):
        train = np.arange(len(x)) != i
        mean, std = x[train].mean(0), x[train].std(0) + 1e-8
        z, z_i = (x[train] - mean) / std, (x[i] - mean) / std
        # Ridge in its dual (kernel) form: episodes are far fewer than features.
        dual = np.linalg.solve(z @ z.T + z.shape[1] * np.eye(len(z)), y[train] - y[train].mean())
        predicted[i] = 1.0 if z_i @ z.T @ dual + y[train].mean() > 0 else -1.0
    return float(np.mean([np.mean(predicted[y == c] == c) for c in (-1.0, 1.0)]))


def accuracy_by_step(played: list[dict[str, np.ndarray]], key: str, steps: int) -> list[float]:
    accuracies = []
    for t in range(steps):
        alive = [episode for episode in played if len(episode[key]) > t]
        labels = np.array([episode["cue"] for episode in alive])
        accuracies.append(loo_linear_probe(np.stack([episode[key][t] for episode in alive]), labels))
    return accuracies


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="trained ctm or lstm runs on a CTM/Memory env")
    parser.add_argument("--episodes", type=int, default=100, help="episodes per run (default 100)")
    parser.add_argument("--out", type=Path, required=True, help="the figure (.png)")
    args = parser.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6.4, 4.0))
    env_ids, control = set(), None
    # Markers and sizes differ so that runs at the same accuracy stay visible on top of each other.
    for index, run in enumerate(args.runs):
        agent, env_id, played = play(run, args.episodes)
        control = control or played  # the first run's episodes
        env_ids.add(env_id)
        steps = int(np.median([len(episode["states"]) for episode in played]))
        success = 100 * np.mean([episode["success"] for episode in played])
        state_accuracy = accuracy_by_step(played, "states", steps)
        label = f"{agent} {run.name} ({success:.0f}% success)"
        axes.plot(range(steps), [100 * a for a in state_accuracy], marker="osD^v"[index % 5],
                  markersize=9 - 2 * (index % 3), linewidth=2.5 - 0.7 * (index % 3), alpha=0.85, label=label)
        print(f"{run}: {agent}, {success:.0f}% success over {len(played)} episodes; cue decoded from the state "
              f"at steps 0..{steps - 1}: {', '.join(f'{100 * a:.0f}%' for a in state_accuracy)}")
    steps = int(np.median([len(episode["images"]) for episode in control]))
    observation_accuracy = accuracy_by_step(control, "images", steps)
    print(f"control, from the observation ({args.runs[0]}'s episodes): "
          f"{', '.join(f'{100 * a:.0f}%' for a in observation_accuracy)}")
    axes.plot(range(steps), [100 * a for a in observation_accuracy], color="gray", linestyle="--",
              label=f"control: from the observation ({args.runs[0].name}'s episodes)")
    axes.axhline(50, color="black", linewidth=0.8, linestyle=":")
    axes.set(xlabel="env step (the cue is in view at step 0 only)", ylabel="cue decoded (leave-one-out, %)",
             ylim=(0, 105), title=f"{', '.join(sorted(env_ids))}: is the cue in the agent's state?")
    axes.legend(fontsize=8, loc="lower left")
    figure.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.out, dpi=120)
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
