"""Rollout buffers that keep the CTM state and hand out whole sequences for backpropagation through time.

A rollout of ``n_steps`` per env is cut into chunks of ``chunk_length`` steps (the whole rollout for full
BPTT).  The buffer stores the CTM state once per chunk -- the state *before* the chunk's first step, as it
was carried, before any episode-start reset -- so re-running the policy from it over the chunk's
observations and episode starts reproduces the rollout exactly.  Minibatches are groups of whole chunks,
never shuffled single steps.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import NamedTuple

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.buffers import DictRolloutBuffer, RolloutBuffer

from ctm_rl.ctm import CTMState

TensorObs = torch.Tensor | dict[str, torch.Tensor]


class CTMRolloutBufferSamples(NamedTuple):
    """A minibatch of ``N`` sequences of ``L`` steps, flattened time-major (row ``t * N + n``)."""

    observations: TensorObs
    actions: torch.Tensor
    old_values: torch.Tensor
    old_log_prob: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor
    episode_starts: torch.Tensor
    states: CTMState


class _SequenceMixin:
    """Chunk-state storage and sequence minibatches, shared by the array and the Dict buffers."""

    def __init__(
        self,
        buffer_size: int,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        state_shape: tuple[int, int],
        device: torch.device | str = "auto",
        gae_lambda: float = 1.0,
        gamma: float = 0.99,
        n_envs: int = 1,
        chunk_length: int | None = None,
    ):
        """
        :param state_shape: ``(d_model, memory_length)``, the shape of each history of one env.
        :param chunk_length: steps per BPTT sequence; ``None`` for the whole rollout.
        """
        self.chunk_length = chunk_length or buffer_size
        if buffer_size % self.chunk_length != 0:
            raise ValueError(f"n_steps ({buffer_size}) must be a multiple of bptt_steps ({self.chunk_length})")
        self.n_chunks = buffer_size // self.chunk_length
        self.state_shape = state_shape
        # The parent's constructor calls reset(), which needs the chunk layout above.
        super().__init__(buffer_size, observation_space, action_space, device, gae_lambda, gamma, n_envs)

    def reset(self) -> None:
        super().reset()
        self.chunk_states = np.zeros((2, self.n_chunks, self.n_envs, *self.state_shape), dtype=np.float32)

    def add_state(self, state: CTMState) -> None:
        """Record the carried state before the step about to be added, if that step opens a chunk."""
        if self.pos % self.chunk_length == 0:
            chunk = self.pos // self.chunk_length
            self.chunk_states[0, chunk] = state.pre.cpu().numpy()
            self.chunk_states[1, chunk] = state.post.cpu().numpy()

    @property
    def n_sequences(self) -> int:
        return self.n_chunks * self.n_envs

    def _to_sequences(self, array: np.ndarray) -> np.ndarray:
        """``(n_steps, n_envs, ...)`` -> ``(L, n_chunks * n_envs, ...)``; sequence ``c * n_envs + e``."""
        shape = array.shape[2:]
        chunked = array.reshape(self.n_chunks, self.chunk_length, self.n_envs, *shape)
        return chunked.swapaxes(0, 1).reshape(self.chunk_length, self.n_sequences, *shape)

    def get(self, batch_size: int | None = None) -> Generator[CTMRolloutBufferSamples, None, None]:
        """Yield minibatches of whole sequences in random order.

        :param batch_size: env steps per minibatch, rounded to whole sequences (at least one);
            ``None`` gives one minibatch with every sequence.
        """
        assert self.full, "the rollout buffer must be full before sampling"
        per_batch = self.n_sequences if batch_size is None else max(1, round(batch_size / self.chunk_length))
        data = {name: self._to_sequences(getattr(self, name)) for name in self._sequence_fields}
        data["observations"] = self._sequence_observations()
        states = self.chunk_states.reshape(2, self.n_sequences, *self.state_shape)
        order = np.random.permutation(self.n_sequences)
        for start in range(0, self.n_sequences, per_batch):
            yield self._sequence_samples(data, states, order[start : start + per_batch])

    _sequence_fields = ("actions", "values", "log_probs", "advantages", "returns", "episode_starts")

    def _take(self, array: np.ndarray, index: np.ndarray) -> torch.Tensor:
        """Sequences ``index`` of a ``(L, S, ...)`` array, flattened time-major to ``(L * len(index), ...)``."""
        picked = array[:, index]
        return self.to_torch(picked.reshape(-1, *picked.shape[2:]))

    def _sequence_samples(self, data: dict, states: np.ndarray, index: np.ndarray) -> CTMRolloutBufferSamples:
        obs = data["observations"]
        observations = (
            {key: self._take(value, index) for key, value in obs.items()}
            if isinstance(obs, dict)
            else self._take(obs, index)
        )
        return CTMRolloutBufferSamples(
            observations=observations,
            actions=self._take(data["actions"], index),
            old_values=self._take(data["values"], index).flatten(),
            old_log_prob=self._take(data["log_probs"], index).flatten(),
            advantages=self._take(data["advantages"], index).flatten(),
            returns=self._take(data["returns"], index).flatten(),
            episode_starts=self._take(data["episode_starts"], index).flatten(),
            states=CTMState(self.to_torch(states[0, index]), self.to_torch(states[1, index])),
        )


class CTMRolloutBuffer(_SequenceMixin, RolloutBuffer):
    """:class:`~stable_baselines3.common.buffers.RolloutBuffer` plus CTM states and sequence minibatches."""

    def _sequence_observations(self) -> np.ndarray:
        return self._to_sequences(self.observations)


class CTMDictRolloutBuffer(_SequenceMixin, DictRolloutBuffer):
    """The Dict-observation variant of :class:`CTMRolloutBuffer`."""

    def _sequence_observations(self) -> dict[str, np.ndarray]:
        return {key: self._to_sequences(obs) for key, obs in self.observations.items()}
