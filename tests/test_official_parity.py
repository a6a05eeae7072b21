"""Parity with the authors' RL agent: every recorded array of the reference fixtures, to 1e-5."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from gymnasium import spaces

from ctm_rl.official import checkpoint_args, load_reference_weights, policy_kwargs_from_args, read_checkpoint
from ctm_rl.policy import CTMPolicy

FIXTURES = Path(__file__).parent / "fixtures"
NAMES = ["cartpole_tiny", "minigrid_tiny"]


def make_policy(meta: dict, kwargs: dict) -> CTMPolicy:
    if meta["env_kind"] == "minigrid":
        obs_space = spaces.Box(0, 255, tuple(meta["obs_shape"]), np.uint8)
    else:
        obs_space = spaces.Box(-np.inf, np.inf, tuple(meta["obs_shape"]), np.float32)
    return CTMPolicy(obs_space, spaces.Discrete(meta["n_actions"]), lambda _: 1e-3, **kwargs)


def run_reference_sequence(policy: CTMPolicy, data) -> dict[str, np.ndarray]:
    """Step the policy through the recorded sequence exactly as the reference agent did."""
    obs = torch.as_tensor(data["obs"])
    starts = torch.as_tensor(data["episode_starts"])
    state = policy.ctm.initial_state(obs.shape[1])
    out = {"synchronisation": [], "action_logits": [], "values": []}
    with torch.no_grad():
        for obs_t, start_t in zip(obs, starts):
            sync, state = policy._synchronise(obs_t, state, start_t)
            latent_pi, latent_vf = policy.mlp_extractor(sync)
            out["synchronisation"].append(sync)
            out["action_logits"].append(policy.action_net(latent_pi))  # raw: SB3 normalises its logits
            out["values"].append(policy.value_net(latent_vf).squeeze(-1))
    result = {k: torch.stack(v).numpy() for k, v in out.items()}
    result["final_pre_trace"], result["final_post_trace"] = state.pre.numpy(), state.post.numpy()
    return result


@pytest.fixture(params=NAMES)
def reference(request):
    name = request.param
    meta = json.loads((FIXTURES / f"{name}.json").read_text())
    return meta, np.load(FIXTURES / f"{name}.npz")


def test_checkpoint_reproduces_every_recorded_array(reference):
    meta, data = reference
    checkpoint = read_checkpoint(FIXTURES / f"{meta['name']}.checkpoint.pt")
    policy = make_policy(meta, policy_kwargs_from_args(checkpoint_args(checkpoint)))
    load_reference_weights(policy, checkpoint["model_state_dict"])
    result = run_reference_sequence(policy, data)
    for key, value in result.items():
        np.testing.assert_allclose(value, data[key], atol=1e-5, rtol=1e-5, err_msg=key)


def test_npz_state_dict_matches_checkpoint(reference):
    meta, data = reference
    checkpoint = read_checkpoint(FIXTURES / f"{meta['name']}.checkpoint.pt")
    for key, tensor in checkpoint["model_state_dict"].items():
        np.testing.assert_array_equal(tensor.numpy(), data[f"state_dict/{key}"], err_msg=key)
