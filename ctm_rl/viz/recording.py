"""Record one episode of a CTM agent: env side (frames, actions, rewards) and brain side (every tick).

A :class:`Recording` holds, for ``T`` env steps of ``K`` internal ticks each, with ``D`` neurons and a
synchronisation vector of length ``S``:

======================  =================  =========================================================
field                   shape              what
======================  =================  =========================================================
``frames``              ``(T, H, W, 3)``   rendered frame of the state the step's action was chosen in
                                           (``None`` if the env does not render rgb arrays)
``observations``        ``(T, *obs)``      the env's observation (before any ``VecNormalize``); a dict
                                           of arrays for Dict spaces
``actions``             ``(T, *act)``      actions sent to the env
``rewards``             ``(T,)``           rewards (un-normalised)
``values``              ``(T,)``           critic value of each step
``action_probs``        ``(T, A)``         the policy's action probabilities at each step
``pre`` / ``post``      ``(T, K, D)``      pre-/post-activation of every neuron after every tick
``sync``                ``(T, K, S)``      output synchronisation after every tick
``tick_action_probs``   ``(T, K, A)``      action probabilities the heads read from each tick's sync
``tick_values``         ``(T, K)``         critic value of each tick's sync
``certainty``           ``(T, K)``         1 - normalised entropy of each tick's action distribution
``synch_left/right``    ``(S,)``           neuron indices of each synchronised pair
======================  =================  =========================================================

``A`` is the number of actions (Discrete), all components' choices (MultiDiscrete), bits (MultiBinary),
or, for continuous actions, the action dimensions: there ``*_action_probs`` hold the distribution's mean
action and ``certainty`` is NaN (a density has no maximum entropy to normalise by).  The last tick is what
the agent acts on: ``action_probs == tick_action_probs[:, -1]`` and ``values == tick_values[:, -1]``.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.vec_env import VecEnv

from ctm_rl.ctm import CTMState
from ctm_rl.policy import CTMPolicy
from ctm_rl.viz.analysis import block_mean
from ctm_rl.viz.env_adapter import Obs, make_adapter
from ctm_rl.viz.heads import action_kind, tick_outputs
from ctm_rl.viz.labels import action_names

FORMAT_VERSION = 1
# Array fields saved as they are; ``frames`` and ``observations`` need special handling.
_ARRAY_FIELDS = ("actions", "rewards", "values", "action_probs", "pre", "post", "sync", "tick_action_probs",
                 "tick_values", "certainty", "synch_left", "synch_right")


@dataclass
class Recording:
    """One recorded episode (see the module docstring for every field's shape and meaning)."""

    frames: np.ndarray | None
    observations: np.ndarray | dict[str, np.ndarray]
    actions: np.ndarray
    rewards: np.ndarray
    values: np.ndarray
    action_probs: np.ndarray
    pre: np.ndarray
    post: np.ndarray
    sync: np.ndarray
    tick_action_probs: np.ndarray
    tick_values: np.ndarray
    certainty: np.ndarray
    synch_left: np.ndarray
    synch_right: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    # --- sizes and labels --------------------------------------------------------------------------------

    @property
    def n_steps(self) -> int:
        """``T``, env steps recorded."""
        return int(self.post.shape[0])

    @property
    def n_ticks(self) -> int:
        """``K``, internal ticks per env step."""
        return int(self.post.shape[1])

    @property
    def n_neurons(self) -> int:
        """``D``, neurons of the CTM."""
        return int(self.post.shape[2])

    @property
    def episode_return(self) -> float:
        """Sum of the (un-normalised) rewards."""
        return float(self.rewards.sum())

    @property
    def action_names(self) -> list[str]:
        """One label per column of ``action_probs``."""
        return list(self.meta.get("action_names") or [f"action {i}" for i in range(self.action_probs.shape[-1])])

    @property
    def env_id(self) -> str:
        """The env's registered id, or ``"env"`` when it has none."""
        return str(self.meta.get("env_id") or "env")

    @property
    def neuron_select_type(self) -> str:
        """How the synchronised neuron pairs were chosen (``first-last``, ``random``, ``random-pairing``)."""
        return str(self.meta.get("neuron_select_type", "first-last"))

    # --- persistence -------------------------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> Path:
        """Write a compressed ``.npz`` (no pickles: loads with ``allow_pickle=False``); returns its path."""
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_name(path.name + ".npz")
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {name: np.asarray(getattr(self, name)) for name in _ARRAY_FIELDS}
        if self.frames is not None:
            arrays["frames"] = self.frames
        if isinstance(self.observations, dict):
            arrays.update({f"observations/{key}": value for key, value in self.observations.items()})
        else:
            arrays["observations"] = self.observations
        meta = dict(self.meta, format_version=FORMAT_VERSION)
        np.savez_compressed(path, meta=np.array(json.dumps(meta)), **arrays)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Recording:
        """Read a recording written by :meth:`save`."""
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            if meta.get("format_version", 0) > FORMAT_VERSION:
                raise ValueError(f"{path} was written by a newer ctm-rl (format {meta['format_version']})")
            obs_keys = [key for key in data.files if key.startswith("observations/")]
            observations = ({key.split("/", 1)[1]: data[key] for key in obs_keys} if obs_keys
                            else data["observations"])
            return cls(
                frames=data["frames"] if "frames" in data.files else None,
                observations=observations,
                meta=meta,
                **{name: data[name] for name in _ARRAY_FIELDS},
            )


def record_episode(
    model: Any,
    env: gym.Env | VecEnv,
    seed: int | None = None,
    deterministic: bool = True,
    *,
    max_steps: int | None = None,
    frame_max_side: int | None = 400,
) -> Recording:
    """Run one episode with a CTM agent and record everything needed to watch it think.

    :param model: a ``CTMPPO`` (or anything with a ``policy`` attribute) or a ``CTMPolicy``.
    :param env: a ``gym.Env`` made with ``render_mode="rgb_array"``, or a ``VecEnv`` with one env (e.g.
        ``DummyVecEnv`` + ``VecNormalize`` from a run: the policy sees normalised observations, the
        recording keeps the env's own observations and rewards, frames come from ``get_images()``).
    :param seed: seeds the env's reset and, for ``deterministic=False``, the action sampling (without
        touching the global torch random state).
    :param deterministic: take the most likely action instead of sampling.
    :param max_steps: stop after this many steps even if the episode has not ended.
    :param frame_max_side: shrink rendered frames (by integer block averaging) until their longer side is
        at most this many pixels: a CartPole frame is 600x400, and 500 of them at full size would dominate
        the ``.npz`` and the drawing time.  ``None`` keeps them as rendered.
    :return: the :class:`Recording`.
    """
    policy = model if isinstance(model, CTMPolicy) else getattr(model, "policy", None)
    if not isinstance(policy, CTMPolicy):
        raise TypeError(f"model must be a CTMPPO or a CTMPolicy, got {type(model).__name__}")
    if max_steps is not None and max_steps < 1:
        raise ValueError(f"max_steps must be positive, got {max_steps}")

    was_training = policy.training
    policy.set_training_mode(False)
    # One env means batches of one: intra-op threads cannot speed such tiny ops up, only make them wait
    # for each other, which on a busy 2-core machine made recording about 4x slower.  Restored below.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    adapter = make_adapter(env)
    # Sampling draws from torch's global generator: fork it so a seeded recording is reproducible and
    # leaves the caller's (e.g. a training run's) random stream where it was.
    rng = torch.random.fork_rng(devices=[]) if seed is not None else contextlib.nullcontext()
    steps: list[dict[str, Any]] = []
    try:
        with adapter, rng, torch.no_grad():
            if seed is not None:
                torch.manual_seed(seed)
            obs, raw_obs = adapter.reset(seed)
            state = CTMState(*(s.clone() for s in policy.ctm.initial_state(1)))
            # True on the first step: the CTM replaces its histories by the learned start traces.
            episode_start = torch.ones(1, device=policy.device)
            while True:
                frame = adapter.frame()
                obs_tensor, _ = policy.obs_to_tensor(obs)
                distribution, values, state, ticks = policy.record_step(obs_tensor, state, episode_start)
                action = _env_action(policy, distribution.get_actions(deterministic=deterministic))
                heads = tick_outputs(policy, ticks.sync[0])
                result = adapter.step(action)
                steps.append({
                    "frame": _shrink(frame, frame_max_side), "obs": raw_obs, "action": action,
                    "reward": result.reward, "value": float(values.flatten()[0]),
                    "pre": ticks.pre[0], "post": ticks.post[0], "sync": ticks.sync[0],
                    "probs": heads.action_probs, "certainty": heads.certainty, "tick_values": heads.values,
                })
                episode_start = torch.zeros(1, device=policy.device)
                done = result.terminated or result.truncated
                if done or (max_steps is not None and len(steps) >= max_steps):
                    break
                obs, raw_obs = result.policy_obs, result.raw_obs
    finally:
        policy.set_training_mode(was_training)
        torch.set_num_threads(threads)

    meta = {
        "env_id": adapter.env_id,
        "action_names": action_names(adapter.unwrapped, adapter.env_id, policy.action_space),
        "action_kind": action_kind(distribution),
        "neuron_select_type": policy.ctm.neuron_select_type,
        "n_synch_out": policy.ctm.n_synch_out,
        "iterations": policy.ctm.iterations,
        "d_model": policy.ctm.d_model,
        "memory_length": policy.ctm.memory_length,
        "seed": seed,
        "deterministic": deterministic,
        "terminated": bool(result.terminated),
        "truncated": bool(result.truncated),
        "stopped_at_max_steps": not done,
    }
    return _assemble(steps, policy, meta)


def _env_action(policy: CTMPolicy, actions: torch.Tensor) -> Any:
    """The policy's action for one env, as the env takes it (the same conversion as ``predict``)."""
    action = actions.cpu().numpy().reshape((-1, *policy.action_space.shape))[0]
    if isinstance(policy.action_space, spaces.Box):
        if policy.squash_output:
            return policy.unscale_action(action)
        return np.clip(action, policy.action_space.low, policy.action_space.high)
    if isinstance(policy.action_space, spaces.Discrete):
        return int(action)
    return action


def _shrink(frame: np.ndarray | None, max_side: int | None) -> np.ndarray | None:
    """Downscale by an integer factor (block mean) so the longer side is at most ``max_side``."""
    if frame is None or max_side is None or max(frame.shape[:2]) <= max_side:
        return frame
    return block_mean(frame, int(np.ceil(max(frame.shape[:2]) / max_side)))


def _stack_obs(observations: list[Obs]) -> np.ndarray | dict[str, np.ndarray]:
    if isinstance(observations[0], dict):
        return {key: np.stack([np.asarray(o[key]) for o in observations]) for key in observations[0]}
    return np.stack([np.asarray(o) for o in observations])


def _stack_frames(frames: list[np.ndarray | None]) -> np.ndarray | None:
    """Frames as one array, or ``None`` if any step has none (a mixed sequence cannot be animated)."""
    if not frames or any(f is None for f in frames) or len({f.shape for f in frames}) != 1:
        return None
    return np.stack(frames)


def _assemble(steps: list[dict[str, Any]], policy: CTMPolicy, meta: dict[str, Any]) -> Recording:
    """Stack per-step records into the recording's arrays (float32 throughout: halves the ``.npz``)."""

    def stacked(key: str) -> np.ndarray:
        return torch.stack([s[key] for s in steps]).cpu().numpy().astype(np.float32)

    tick_action_probs = stacked("probs")
    tick_values = stacked("tick_values")
    return Recording(
        frames=_stack_frames([s["frame"] for s in steps]),
        observations=_stack_obs([s["obs"] for s in steps]),
        actions=np.stack([np.asarray(s["action"]) for s in steps]),
        rewards=np.asarray([s["reward"] for s in steps], dtype=np.float32),
        values=np.asarray([s["value"] for s in steps], dtype=np.float32),
        action_probs=tick_action_probs[:, -1].copy(),
        pre=stacked("pre"),
        post=stacked("post"),
        sync=stacked("sync"),
        tick_action_probs=tick_action_probs,
        tick_values=tick_values,
        certainty=stacked("certainty"),
        synch_left=policy.ctm.synch_left.cpu().numpy().astype(np.int64),
        synch_right=policy.ctm.synch_right.cpu().numpy().astype(np.int64),
        meta=meta,
    )
