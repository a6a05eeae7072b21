"""ctm-rl: Continuous Thought Machines as recurrent Stable-Baselines3 policies, trained with PPO."""

from ctm_rl.ctm import ContinuousThoughtMachine, CTMRecording, CTMState
from ctm_rl.policy import CnnCTMPolicy, CTMPolicy, MultiInputCTMPolicy
from ctm_rl.ppo import CTMPPO

__version__ = "0.1.0"

__all__ = [
    "CTMPPO",
    "CTMPolicy",
    "CTMRecording",
    "CTMState",
    "CnnCTMPolicy",
    "ContinuousThoughtMachine",
    "MultiInputCTMPolicy",
]
