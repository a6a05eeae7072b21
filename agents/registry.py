"""The agents one experiment config can train: an algorithm class and its policies, by name."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gymnasium import spaces
from sb3_contrib import RecurrentPPO
from stable_baselines3 import PPO
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm

from ctm_rl.errors import ConfigError, did_you_mean
from ctm_rl.ppo import CTMPPO


@dataclass(frozen=True)
class AgentSpec:
    """How to build one kind of agent.

    :param name: the config's ``agent`` value.
    :param description: one line for listings.
    :param algo: the SB3 algorithm class (also the class that loads saved models).
    :param policy: policy alias for Box/Discrete/... observations.
    :param dict_policy: policy alias for Dict observations.
    :param frame_stack: if positive, the agent sees this many stacked frames (``VecFrameStack``).
    :param embeds_symbolic_grids: the policy embeds MiniGrid ``(object, colour, state)`` index grids
        itself; other agents get them flattened to vectors (they are categorical, not pixels).
    :param width_option: the ``policy_kwargs`` key that sets the network's width, which
        ``--match-params`` tunes to match another agent's parameter count.
    """

    name: str
    description: str
    algo: type[OnPolicyAlgorithm]
    policy: str
    dict_policy: str
    frame_stack: int = 0
    embeds_symbolic_grids: bool = False
    width_option: str = "net_arch"

    def width_kwargs(self, width: int) -> dict[str, Any]:
        """The ``policy_kwargs`` that give the network width ``width`` (two hidden layers for ``net_arch``,
        SB3's default depth)."""
        return {self.width_option: [width, width] if self.width_option == "net_arch" else width}

    @property
    def recurrent(self) -> bool:
        """Whether the agent carries a state between steps (``predict`` takes and returns it)."""
        return self.algo in (CTMPPO, RecurrentPPO)

    def policy_for(self, observation_space: spaces.Space) -> str:
        """The policy alias to use for ``observation_space``."""
        return self.dict_policy if isinstance(observation_space, spaces.Dict) else self.policy


AGENTS: dict[str, AgentSpec] = {
    spec.name: spec
    for spec in (
        AgentSpec("ctm", "Continuous Thought Machine policy, recurrent PPO (CTMPPO)", CTMPPO,
                  "CTMPolicy", "MultiInputCTMPolicy", embeds_symbolic_grids=True, width_option="d_model"),
        AgentSpec("lstm", "LSTM policy, recurrent PPO (sb3-contrib RecurrentPPO)", RecurrentPPO,
                  "MlpLstmPolicy", "MultiInputLstmPolicy", width_option="lstm_hidden_size"),
        AgentSpec("mlp", "memoryless MLP policy, PPO (Stable-Baselines3)", PPO,
                  "MlpPolicy", "MultiInputPolicy"),
        AgentSpec("framestack", "MLP policy on the last 4 observations, PPO (VecFrameStack)", PPO,
                  "MlpPolicy", "MultiInputPolicy", frame_stack=4),
    )
}


def get_agent(name: str) -> AgentSpec:
    """The agent called ``name``."""
    if name not in AGENTS:
        raise ConfigError(f"unknown agent {name!r}{did_you_mean(name, AGENTS)}; agents: {', '.join(AGENTS)}")
    return AGENTS[name]
