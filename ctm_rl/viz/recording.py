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
