"""The CTM core against an independent oracle of the authors' RL agent, for many configurations.

``reference_ctm`` re-implements the reference forward pass literally in the reference's own parameter
layout; it is first checked bit-for-bit against the authors' recorded fixtures, then used to generate
random agents of configurations the fixtures do not cover.  Each is written as a reference checkpoint,
loaded through ``ctm_rl.official`` into a ``CTMPolicy`` and compared over a sequence with episode starts.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from gymnasium import spaces

from ctm_rl.backbones import MiniGridBackbone
from ctm_rl.ctm import ContinuousThoughtMachine, CTMState, select_neuron_pairs
from ctm_rl.fused import fused_parameters
from ctm_rl.official import (
    REFERENCE_DEFAULTS,
    CheckpointError,
    checkpoint_args,
    load_reference_weights,
    policy_kwargs_from_args,
    read_checkpoint,
)
from ctm_rl.policy import CTMPolicy
from tests import reference_ctm as ref

FIXTURES = Path(__file__).parent / "fixtures"
T, B = 8, 3  # env steps and parallel envs of every compared sequence

# Episode starts inside the sequence: every env starts at t=0 and restarts once or twice later, one of
# them on the last step (so the final traces come from a freshly reset env).
EPISODE_STARTS = torch.zeros(T, B)
EPISODE_STARTS[0] = 1.0
EPISODE_STARTS[[3, 5, 6, 7], [0, 1, 2, 0]] = 1.0


# --- helpers ------------------------------------------------------------------------------------------


def make_policy(args: dict, obs_shape: tuple[int, ...], n_actions: int) -> CTMPolicy:
    """A CTMPolicy configured from reference ``args`` the way ``ctm_rl.official`` describes it."""
    if ref.is_minigrid(args):
        obs_space = spaces.Box(0, 255, obs_shape, np.uint8)
    else:
        obs_space = spaces.Box(-np.inf, np.inf, obs_shape, np.float32)
    kwargs = policy_kwargs_from_args(ref.full_args(args))
    return CTMPolicy(obs_space, spaces.Discrete(n_actions), lambda _: 1e-3, **kwargs)


def random_obs(args: dict, obs_shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """``(T, B, *obs_shape)`` float32: MiniGrid (object, colour, state) indices, or Gaussian vectors."""
    if not ref.is_minigrid(args):
        return torch.randn(T, B, *obs_shape, generator=generator)
    channels = [torch.randint(0, size, (T, B, *obs_shape[:2]), generator=generator)
                for size in ref.MINIGRID_VOCAB.values()]
    return torch.stack(channels, dim=-1).float()


@torch.no_grad()
def run_policy(policy: CTMPolicy, obs: torch.Tensor, starts: torch.Tensor) -> dict[str, np.ndarray]:
    """Step ``policy`` through a sequence like the reference agent; raw logits (SB3 normalises its own)."""
    policy.set_training_mode(False)
    state = policy.ctm.initial_state(obs.shape[1])
    out: dict[str, list] = {"synchronisation": [], "action_logits": [], "values": []}
    for obs_t, start_t in zip(obs.to(policy.device), starts.to(policy.device)):
        sync, state = policy._synchronise(obs_t, state, start_t)
        latent_pi, latent_vf = policy.mlp_extractor(sync)
        out["synchronisation"].append(sync)
        out["action_logits"].append(policy.action_net(latent_pi))
        out["values"].append(policy.value_net(latent_vf).squeeze(-1))
    result = {k: torch.stack(v).cpu().numpy() for k, v in out.items()}
    result["final_pre_trace"], result["final_post_trace"] = state.pre.cpu().numpy(), state.post.cpu().numpy()
    return result


def assert_same_outputs(
    ours: dict[str, np.ndarray], expected: dict[str, np.ndarray], tol: float = 1e-5
) -> None:
    assert ours.keys() == expected.keys()
    for key, value in expected.items():
        np.testing.assert_allclose(ours[key], value, err_msg=key, atol=tol, rtol=tol)


def load_policy(path: Path, obs_shape: tuple[int, ...], n_actions: int) -> CTMPolicy:
    """The loading path a user takes: read, complete the args, build the policy, copy the weights."""
    checkpoint = read_checkpoint(path)
    args = checkpoint_args(checkpoint)
    policy = make_policy(args, obs_shape, n_actions)
    load_reference_weights(policy, checkpoint["model_state_dict"])
    return policy


# --- the oracle itself ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["cartpole_tiny", "minigrid_tiny"])
def test_oracle_reproduces_the_authors_fixtures(name):
    """The oracle is only worth trusting if it reproduces the authors' own recorded numbers."""
    meta = json.loads((FIXTURES / f"{name}.json").read_text())
    data = np.load(FIXTURES / f"{name}.npz")
    sd = {k.removeprefix("state_dict/"): torch.as_tensor(data[k])
          for k in data.files if k.startswith("state_dict/")}
    args = {**meta["config"], "env_id": meta["env_id"]}
    shapes = ref.state_dict_shapes(args, tuple(meta["obs_shape"]), meta["n_actions"])
    assert list(shapes.items()) == [(k, tuple(v)) for k, v in meta["state_dict_shapes"].items()]
    result = ref.run_sequence(sd, args, torch.as_tensor(data["obs"]), torch.as_tensor(data["episode_starts"]))
    for key, value in result.items():
        np.testing.assert_allclose(value, data[key], err_msg=key, atol=1e-5, rtol=1e-5)


# --- generality: many configurations against the oracle ------------------------------------------------

CLASSIC, MINIGRID = "CartPole-v1", "MiniGrid-FourRooms-v0"
BASE = {"d_input": 8, "synapse_depth": 1, "neuron_select_type": "first-last", "deep_memory": True,
        "dropout": 0.0, "do_normalisation": False, "continuous_state_trace": True}
CONFIGS = {
    # name: (args, observation shape, number of actions)
    "classic-obs6-k1": (dict(BASE, env_id=CLASSIC, d_model=24, n_synch_out=6, iterations=1, memory_length=3,
                             memory_hidden_dims=3), (6,), 3),
    "classic-obs2x3-k5-M10-shallow": (dict(BASE, env_id=CLASSIC, d_model=20, n_synch_out=4, iterations=5,
                                           memory_length=10, memory_hidden_dims=2, deep_memory=False),
                                      (2, 3), 2),
    "classic-M1": (dict(BASE, env_id=CLASSIC, d_model=16, n_synch_out=5, iterations=2, memory_length=1,
                        memory_hidden_dims=4), (4,), 2),
    "classic-layernorm": (dict(BASE, env_id=CLASSIC, d_model=16, n_synch_out=5, iterations=2, memory_length=4,
                               memory_hidden_dims=5, do_normalisation=True), (3,), 4),
    "classic-shallow-layernorm": (dict(BASE, env_id=CLASSIC, d_model=12, n_synch_out=3, iterations=2,
                                       memory_length=3, memory_hidden_dims=2, deep_memory=False,
                                       do_normalisation=True), (5,), 2),
    "classic-n_synch=d_model": (dict(BASE, env_id=CLASSIC, d_model=10, n_synch_out=10, iterations=2,
                                     memory_length=6, memory_hidden_dims=2), (4,), 2),
    "classic-unet2": (dict(BASE, env_id=CLASSIC, d_model=24, n_synch_out=6, iterations=2, memory_length=5,
                           memory_hidden_dims=3, synapse_depth=2), (4,), 2),
    # linspace(27, 16, 4) = 27, 23.33, 19.67, 16: widths truncated to int
    "classic-unet4": (dict(BASE, env_id=CLASSIC, d_model=27, n_synch_out=7, iterations=2, memory_length=3,
                           memory_hidden_dims=2, synapse_depth=4), (4,), 3),
    "classic-dropout-eval": (dict(BASE, env_id=CLASSIC, d_model=16, n_synch_out=4, iterations=2,
                                  memory_length=4, memory_hidden_dims=2, dropout=0.3), (4,), 2),
    "classic-no-continuous-trace": (dict(BASE, env_id=CLASSIC, d_model=16, n_synch_out=4, iterations=2,
                                         memory_length=4, memory_hidden_dims=2, continuous_state_trace=False),
                                    (4,), 2),
    "minigrid-5x5-k2": (dict(BASE, env_id=MINIGRID, d_model=20, n_synch_out=5, iterations=2, memory_length=4,
                             memory_hidden_dims=3), (5, 5, 3), 4),
    # Non-square: the position index must be h * W + w, not h * H + w.
    "minigrid-3x6": (dict(BASE, env_id=MINIGRID, d_model=12, n_synch_out=4, iterations=2, memory_length=3,
                          memory_hidden_dims=2), (3, 6, 3), 3),
    "minigrid-9x9-shallow-layernorm-unet3": (dict(BASE, env_id=MINIGRID, d_input=4, d_model=24, n_synch_out=6,
                                                  iterations=1, memory_length=3, memory_hidden_dims=2,
                                                  deep_memory=False, do_normalisation=True, synapse_depth=3),
                                             (9, 9, 3), 7),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_checkpoint_of_any_configuration_matches_oracle(name, tmp_path):
    args, obs_shape, n_actions = CONFIGS[name]
    generator = torch.Generator().manual_seed(sum(map(ord, name)))
    sd = ref.random_state_dict(args, obs_shape, n_actions, generator)
    path = tmp_path / f"{name}.pt"
    ref.write_checkpoint(path, sd, args)

    policy = load_policy(path, obs_shape, n_actions)
    obs = random_obs(args, obs_shape, generator)
    expected = ref.run_sequence(sd, args, obs, EPISODE_STARTS)
    # The oracle computes the first synapse layer over concat(f, z) every tick; the policy adds W_z z to the
    # feature term W_f f computed once per step.  The float32 rounding differs, and a LayerNorm over a few
    # history slots (do_normalisation) amplifies it about a thousandfold over ten ticks.
    tol = 1e-4 if args["do_normalisation"] else 1e-5
    assert_same_outputs(run_policy(policy, obs, EPISODE_STARTS), expected, tol)


def test_missing_model_args_take_the_reference_defaults(tmp_path):
    # The oracle's own transcription of the defaults and the loader's must agree ...
    assert REFERENCE_DEFAULTS == ref.REFERENCE_MODEL_DEFAULTS
    # ... and a checkpoint that names only its env (older code versions saved fewer arguments) loads as
    # the default agent: d_model 128, d_input 64, M 5, H 2, 16 output neurons, 1 tick, deep NLMs.
    args = {"env_id": CLASSIC}
    generator = torch.Generator().manual_seed(7)
    sd = ref.random_state_dict(args, (4,), 2, generator)
    path = tmp_path / "defaults.pt"
    ref.write_checkpoint(path, sd, args)
    loaded = checkpoint_args(read_checkpoint(path))
    assert {k: loaded[k] for k in ref.REFERENCE_MODEL_DEFAULTS} == ref.REFERENCE_MODEL_DEFAULTS
    policy = load_policy(path, (4,), 2)
    assert (policy.ctm.d_model, policy.ctm.memory_length, policy.ctm.synch_size) == (128, 5, 16 * 17 // 2)
    obs = random_obs(args, (4,), generator)
    expected = ref.run_sequence(sd, args, obs, EPISODE_STARTS)
    assert_same_outputs(run_policy(policy, obs, EPISODE_STARTS), expected)


def test_partially_missing_model_args(tmp_path):
    args = dict(CONFIGS["classic-obs6-k1"][0])
    args["memory_hidden_dims"] = ref.REFERENCE_MODEL_DEFAULTS["memory_hidden_dims"]
    args["iterations"] = 2
    sd = ref.random_state_dict(args, (6,), 3, torch.Generator().manual_seed(3))
    path = tmp_path / "partial.pt"
    ref.write_checkpoint(path, sd, args, omit=("memory_hidden_dims", "deep_memory", "dropout"))
    loaded = checkpoint_args(read_checkpoint(path))
    assert loaded["memory_hidden_dims"] == 2 and loaded["deep_memory"] is True and loaded["iterations"] == 2
    obs = random_obs(args, (6,), torch.Generator().manual_seed(4))
    policy = load_policy(path, (6,), 3)
    expected = ref.run_sequence(sd, args, obs, EPISODE_STARTS)
    assert_same_outputs(run_policy(policy, obs, EPISODE_STARTS), expected)


# --- bad files ------------------------------------------------------------------------------------------

_EXECUTED: list[str] = []


def _record_execution(tag: str) -> str:
    _EXECUTED.append(tag)
    return tag


class _Payload:
    """An object whose unpickling would run code: a safe loader must refuse it, never call this."""

    def __reduce__(self):
        return (_record_execution, ("unpickled",))


@pytest.fixture
def small_checkpoint(tmp_path):
    """A valid small checkpoint: (path, reference state_dict, args)."""
    args, obs_shape, n_actions = CONFIGS["classic-obs6-k1"]
    sd = ref.random_state_dict(args, obs_shape, n_actions, torch.Generator().manual_seed(11))
    path = tmp_path / "ok.pt"
    ref.write_checkpoint(path, sd, args)
    return path, sd, args


def test_not_a_checkpoint_is_refused(tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("this is not a checkpoint\n")
    with pytest.raises(CheckpointError, match="cannot read"):
        read_checkpoint(text)
    with pytest.raises(CheckpointError, match="not found"):
        read_checkpoint(tmp_path / "missing.pt")
    listing = tmp_path / "list.pt"
    torch.save([torch.zeros(2)], listing)
    with pytest.raises(CheckpointError, match="model_state_dict"):
        read_checkpoint(listing)


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_arbitrary_pickled_object_is_refused_without_running_it(tmp_path, writer):
    path = tmp_path / "evil.pt"
    payload = {"model_state_dict": {}, "args": _Payload()}
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(payload, f, protocol=2)  # the protocol torch.load expects
    _EXECUTED.clear()
    with pytest.raises(CheckpointError, match="cannot read"):
        read_checkpoint(path)
    assert _EXECUTED == []  # weights_only refused the object before building it


@pytest.mark.parametrize(("changed", "message"), [
    ({"model_type": "lstm"}, "model_type 'lstm'"),
    # The authors' RL agent only synchronises 'first-last' neurons; random pairs could not be reproduced.
    ({"neuron_select_type": "random"}, "supports only 'first-last'"),
])
def test_checkpoints_we_cannot_reproduce_are_refused(small_checkpoint, tmp_path, changed, message):
    _, sd, args = small_checkpoint
    path = tmp_path / "refused.pt"
    ref.write_checkpoint(path, sd, dict(args, **changed))
    with pytest.raises(CheckpointError, match=message):
        checkpoint_args(read_checkpoint(path))


def test_wrong_shapes_missing_and_unknown_tensors_are_refused(small_checkpoint):
    _, sd, args = small_checkpoint
    _, obs_shape, n_actions = CONFIGS["classic-obs6-k1"]

    # Weights of another action count than the policy's.
    policy = make_policy(args, obs_shape, n_actions + 1)
    with pytest.raises(CheckpointError, match=r"shape mismatch for action_net\.weight"):
        load_reference_weights(policy, sd)
    # Args that disagree with the weights (d_model).
    policy = make_policy(dict(args, d_model=args["d_model"] + 4), obs_shape, n_actions)
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_reference_weights(policy, sd)

    policy = make_policy(args, obs_shape, n_actions)
    missing = {k: v for k, v in sd.items() if not k.endswith("trace_processor.0.2.T")}
    with pytest.raises(CheckpointError, match="no weights for ctm.nlm.layers.2.temperature"):
        load_reference_weights(policy, missing)
    with pytest.raises(CheckpointError, match="unknown parameter"):
        load_reference_weights(policy, {**sd, "recurrent_model.attention.in_proj_weight": torch.zeros(3, 3)})
    # A shallow policy has no place for the deep NLM's second layer.
    policy = make_policy(dict(args, deep_memory=False), obs_shape, n_actions)
    with pytest.raises(CheckpointError):
        load_reference_weights(policy, sd)


# --- gradients ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["classic-layernorm", "minigrid-9x9-shallow-layernorm-unet3"])
def test_gradients_reach_every_parameter(name):
    """Backprop from the LAST env step's outputs through T=3 steps x K>=2 ticks reaches every parameter."""
    args, obs_shape, n_actions = CONFIGS[name]
    args = dict(args, iterations=max(2, args["iterations"]))
    torch.manual_seed(0)
    policy = make_policy(args, obs_shape, n_actions)
    with torch.no_grad():
        # The clamp to [0, 4] passes no gradient outside the interval: keep every decay strictly inside.
        policy.ctm.decay_params_out.uniform_(0.5, 3.5)
    generator = torch.Generator().manual_seed(1)
    obs = random_obs(args, obs_shape, generator)[:3]
    starts = torch.zeros(3, B)
    starts[0] = 1.0  # the start traces are read at step 0 only
    state = policy.ctm.initial_state(B)
    for obs_t, start_t in zip(obs, starts):
        sync, state = policy._synchronise(obs_t, state, start_t)
    latent_pi, latent_vf = policy.mlp_extractor(sync)
    logits, values = policy.action_net(latent_pi), policy.value_net(latent_vf)
    # Random weights on the outputs, so no symmetry (e.g. a sum after a LayerNorm) can cancel a gradient.
    loss = (logits * torch.randn(logits.shape, generator=generator)).sum() + (values ** 2).sum()
    loss.backward()

    for param_name, param in policy.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, f"no gradient reaches {param_name}"
    # Every neuron's private NLM weights get their own gradient (no neuron is cut off).
    for layer in policy.ctm.nlm.layers:
        if hasattr(layer, "weight"):
            assert (layer.weight.grad.abs().flatten(1).sum(1) > 0).all()
    # The start traces are used 3*K ticks before the loss.  The oldest slot of each history is shifted
    # out before anything reads it -- true of the reference agent too -- so only it gets no gradient.
    grad_pre, grad_post = policy.ctm.start_trace.grad, policy.ctm.start_activated_trace.grad
    assert (grad_pre[:, 1:] != 0).all() and (grad_pre[:, 0] == 0).all()
    assert (grad_post[:, -1] != 0).all()  # the newest post-activation feeds the first tick's synapses
    assert (policy.ctm.decay_params_out.grad != 0).all()


# --- the fused backward pass ----------------------------------------------------------------------------

# Configurations of the fused pass: each runs 11 env steps, long enough for the sliding windows to wrap
# around their buffers (every 2M + 1 ticks) several times.
FUSED_CASES = {
    "deep-nlm-2-ticks": dict(iterations=2, memory_length=4, memory_hidden_dims=3),
    "shallow-nlm": dict(iterations=2, memory_length=3, deep_nlms=False),
    "random-pairs": dict(iterations=1, memory_length=5, neuron_select_type="random"),
    "random-pairing-3-ticks": dict(iterations=3, memory_length=2, neuron_select_type="random-pairing"),
    "memory-1": dict(iterations=2, memory_length=1),
}


def random_ctm(device: str = "cpu", **kwargs) -> ContinuousThoughtMachine:
    """A small float64 CTM whose temperatures, LayerNorms and decays are off their initial values."""
    torch.manual_seed(0)
    ctm = ContinuousThoughtMachine(6, d_model=10, n_synch_out=4, **kwargs).double().to(device)
    with torch.no_grad():
        ctm.decay_params_out.uniform_(-0.5, 4.5)  # some outside [0, 4], where the clamp passes no gradient
        for module in ctm.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.normal_()
                module.bias.normal_()
            if hasattr(module, "temperature"):
                module.temperature.uniform_(0.5, 2.0)
    return ctm


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                  reason="no CUDA device"))]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", FUSED_CASES)
def test_fused_backward_matches_autograd(name, device):
    ctm = random_ctm(device, **FUSED_CASES[name])
    generator = torch.Generator().manual_seed(1)
    steps, envs, d, m = 11, 4, ctm.d_model, ctm.memory_length

    def random(*shape, requires_grad=False):
        return torch.randn(shape, generator=generator, dtype=torch.float64).to(device).requires_grad_(requires_grad)

    features = random(steps, envs, 6, requires_grad=True)
    state = CTMState(random(envs, d, m, requires_grad=True), random(envs, d, m, requires_grad=True))
    starts = torch.zeros(steps, envs, device=device)
    starts[0, 0] = starts[1, 0] = starts[2, 1] = starts[5, [1, 2]] = starts[10, 3] = 1.0  # incl. back to back
    out_weights = [random(*shape) for shape in ((steps, envs, ctm.synch_size), (envs, d, m), (envs, d, m))]
    inputs = [features, *state, *ctm.parameters()]

    def run(fused: bool):
        ctm.fused_backward = fused
        sync, final = ctm.forward_sequence(ctm.feature_term(features), state, starts)
        loss = sum((out * w).sum() for out, w in zip((sync, *final), out_weights))
        return (sync, *final), torch.autograd.grad(loss, inputs)

    expected_outputs, expected_grads = run(False)
    names = ["features", "state.pre", "state.post"] + [n for n, _ in ctm.named_parameters()]
    for _ in range(2):  # the second pass reuses the first one's buffers
        outputs, grads = run(True)
        for got, expected in zip(outputs, expected_outputs):
            torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
        for param_name, got, expected in zip(names, grads, expected_grads):
            torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-10, msg=f"gradient of {param_name}")


@pytest.mark.parametrize("kwargs", [dict(synapse_depth=2), dict(do_layernorm_nlm=True), dict(dropout=0.1),
                                    dict(continuous_state_trace=False)])
def test_architectures_outside_the_fused_pass_train_with_autograd(kwargs):
    ctm = ContinuousThoughtMachine(6, d_model=10, n_synch_out=4, **kwargs)
    assert fused_parameters(ctm) is None
    if kwargs.get("dropout"):  # dropout only matters while training
        assert fused_parameters(ctm.eval()) is not None


def test_fused_backward_refuses_a_second_pass():
    ctm = random_ctm(iterations=2, memory_length=3)
    feature_term = ctm.feature_term(torch.randn(3, 2, 6, dtype=torch.float64))
    sync, _ = ctm.forward_sequence(feature_term, ctm.initial_state(2), torch.zeros(3, 2))
    sync.sum().backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="cannot run twice"):
        sync.sum().backward()


# --- neuron selection -----------------------------------------------------------------------------------


def test_first_last_uses_the_last_neurons():
    left, right = select_neuron_pairs(12, 4, "first-last")
    i, j = torch.triu_indices(4, 4)
    assert torch.equal(left, 8 + i) and torch.equal(right, 8 + j)

    torch.manual_seed(0)
    ctm = ContinuousThoughtMachine(feature_dim=3, d_model=12, n_synch_out=4, memory_length=5)
    post = torch.randn(2, 12, 5)
    changed = post.clone()
    changed[:, :8] = torch.randn(2, 8, 5)  # the first D - n neurons do not take part
    assert torch.equal(ctm.synchronisation(post), ctm.synchronisation(changed))
    changed[:, 11, 0] += 1.0
    assert not torch.equal(ctm.synchronisation(post), ctm.synchronisation(changed))


@pytest.mark.parametrize("select_type, n_pairs", [("random", lambda n: n * (n + 1) // 2),
                                                  ("random-pairing", lambda n: n)])
def test_random_neuron_selection(select_type, n_pairs):
    d, n = 20, 6
    torch.manual_seed(123)
    ctm = ContinuousThoughtMachine(feature_dim=3, d_model=d, n_synch_out=n, neuron_select_type=select_type)
    assert ctm.synch_size == n_pairs(n) == len(ctm.synch_left) == len(ctm.synch_right)
    for indices in (ctm.synch_left, ctm.synch_right):
        assert indices.min() >= 0 and indices.max() < d
    sync, _ = ctm(ctm.feature_term(torch.randn(2, 3)), ctm.initial_state(2))
    assert sync.shape == (2, n_pairs(n))

    torch.manual_seed(123)
    again = ContinuousThoughtMachine(feature_dim=3, d_model=d, n_synch_out=n, neuron_select_type=select_type)
    assert torch.equal(again.synch_left, ctm.synch_left) and torch.equal(again.synch_right, ctm.synch_right)
    torch.manual_seed(124)
    other = ContinuousThoughtMachine(feature_dim=3, d_model=d, n_synch_out=n, neuron_select_type=select_type)
    assert not torch.equal(torch.stack((other.synch_left, other.synch_right)),
                           torch.stack((ctm.synch_left, ctm.synch_right)))


# --- state handling and recording -----------------------------------------------------------------------


def test_without_continuous_state_trace_every_step_starts_afresh():
    args, obs_shape, n_actions = CONFIGS["classic-no-continuous-trace"]
    torch.manual_seed(0)
    policy = make_policy(args, obs_shape, n_actions)
    obs = random_obs(args, obs_shape, torch.Generator().manual_seed(5))
    no_starts = torch.zeros(T, B)
    result = run_policy(policy, obs, no_starts)
    # Different earlier observations, same last observation: identical outputs and traces at the last step.
    changed = obs.clone()
    changed[:-1] = torch.randn(T - 1, B, *obs_shape)
    changed_result = run_policy(policy, changed, no_starts)
    for key in ("synchronisation", "action_logits", "values"):
        np.testing.assert_array_equal(changed_result[key][-1], result[key][-1], err_msg=key)
    for key in ("final_pre_trace", "final_post_trace"):
        np.testing.assert_array_equal(changed_result[key], result[key], err_msg=key)
    # Each step equals one step from the start traces.
    for t in range(T):
        single = run_policy(policy, obs[t:t + 1], no_starts[:1])
        np.testing.assert_array_equal(single["synchronisation"][0], result["synchronisation"][t])


def test_recording_mode():
    torch.manual_seed(0)
    k, d, n = 3, 10, 4
    ctm = ContinuousThoughtMachine(feature_dim=5, d_model=d, iterations=k, memory_length=4, n_synch_out=n)
    feature_term, starts = ctm.feature_term(torch.randn(2, 5)), torch.tensor([0.0, 1.0])
    state = CTMState(torch.randn(2, d, 4), torch.randn(2, d, 4))
    sync, new_state = ctm(feature_term, state, starts)
    sync_rec, state_rec, rec = ctm(feature_term, state, starts, record=True)

    assert rec.pre.shape == rec.post.shape == (2, k, d) and rec.sync.shape == (2, k, n * (n + 1) // 2)
    assert torch.equal(rec.sync[:, -1], sync) and torch.equal(rec.pre[:, -1], new_state.pre[..., -1])
    assert torch.equal(rec.post[:, -1], new_state.post[..., -1])
    # The recorded ticks are the last K entries of the histories (M >= K here).
    assert torch.equal(rec.pre, new_state.pre[..., -k:].transpose(1, 2))
    assert torch.equal(rec.post, new_state.post[..., -k:].transpose(1, 2))
    # Recording changes nothing about the result.
    assert torch.equal(sync_rec, sync)
    assert torch.equal(state_rec.pre, new_state.pre) and torch.equal(state_rec.post, new_state.post)


# --- configuration errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"d_model": 0}, "d_model must be a positive integer"),
        ({"d_model": 8, "n_synch_out": 9}, r"n_synch_out \(9\) cannot exceed d_model \(8\)"),
        ({"neuron_select_type": "first-middle"}, "neuron_select_type must be one of"),
        ({"memory_length": 0}, "memory_length must be a positive integer"),
        ({"iterations": 1.5}, "iterations must be a positive integer"),
    ],
)
def test_invalid_configuration_is_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ContinuousThoughtMachine(feature_dim=4, **kwargs)
    with pytest.raises(ValueError, match=message):
        CTMPolicy(spaces.Box(-1, 1, (4,), np.float32), spaces.Discrete(2), lambda _: 1e-3, **kwargs)


# --- devices --------------------------------------------------------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    args, obs_shape, n_actions = CONFIGS["minigrid-5x5-k2"]
    sd = ref.random_state_dict(args, obs_shape, n_actions, torch.Generator().manual_seed(2))
    policy = make_policy(args, obs_shape, n_actions)
    load_reference_weights(policy, sd)
    obs = random_obs(args, obs_shape, torch.Generator().manual_seed(3))
    expected = run_policy(policy, obs, EPISODE_STARTS)

    policy = policy.to("cuda")
    assert policy.ctm.synch_left.is_cuda and policy.ctm.start_trace.is_cuda
    # float32 on both devices, but the GPU sums in another order: allow 1e-4 after 8 steps x 2 ticks.
    assert_same_outputs(run_policy(policy, obs, EPISODE_STARTS), expected, tol=1e-4)


# --- the feature term computed by the backbone ------------------------------------------------------------


@pytest.mark.parametrize("shape", [(7, 7, 3), (3, 6, 3)])
def test_minigrid_backbone_projects_like_its_features(shape):
    """The MiniGrid backbone's distinct-cell computation of W_f f (and of f) equals the per-cell one,
    values and gradients, on a batch where cells repeat (as in real grids) and some are unique."""
    torch.manual_seed(0)
    space = spaces.Box(0, 10, shape, dtype=np.uint8)
    backbone = MiniGridBackbone(space, d_input=5).double()
    generator = torch.Generator().manual_seed(1)
    grids = torch.stack([torch.randint(0, size, (6, *shape[:2]), generator=generator)
                         for size in ref.MINIGRID_VOCAB.values()], dim=-1)
    grids[:3, :, :, 0] = 2  # walls everywhere in half of the batch: many repeated cells
    weight = torch.randn(8, backbone.features_dim, dtype=torch.float64, requires_grad=True)

    def per_cell(observations: torch.Tensor) -> torch.Tensor:  # the reference's formulation, cell by cell
        grid = observations.long()
        positions = torch.arange(shape[0] * shape[1]).view(1, *shape[:2]).expand(len(grid), -1, -1)
        cells = torch.cat((backbone.object_embedding(grid[..., 0]), backbone.color_embedding(grid[..., 1]),
                           backbone.state_embedding(grid[..., 2]), backbone.position_embedding(positions)), -1)
        return backbone.projector(cells).flatten(1)

    expected = torch.nn.functional.linear(per_cell(grids), weight)
    parameters = [weight, *backbone.parameters()]
    expected_grads = torch.autograd.grad((expected ** 2).sum(), parameters)
    torch.testing.assert_close(backbone(grids), per_cell(grids), rtol=0, atol=1e-12)
    projected = backbone.project(grids, weight)
    torch.testing.assert_close(projected, expected, rtol=0, atol=1e-10)
    for got, want in zip(torch.autograd.grad((projected ** 2).sum(), parameters), expected_grads):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
