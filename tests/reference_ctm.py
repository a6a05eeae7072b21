"""Test oracle: a literal re-implementation of the authors' CTM RL agent, in *their* parameter layout.

This module deliberately shares no code with ``ctm_rl``: it works on a plain dict of tensors keyed exactly
like the reference ``state_dict`` (``recurrent_model.trace_processor.0.0.w1`` of shape ``(in, out, D)``,
biases ``(1, D, out)``, ...) and spells out every operation the way the authors' code does (per-neuron
``einsum('BDM,MHD->BDH')``, a triangular mask over the *last* ``n_synch_out`` neurons, the synapse U-Net
for ``synapse_depth > 1``).  It is checked against the two recorded fixtures of the authors' own code, then
used to generate random agents of any configuration and their expected outputs.

Everything runs in eval mode: dropout is the identity, as it is in the reference when evaluating.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

Tensor = torch.Tensor
StateDict = dict[str, Tensor]

# The reference's model arguments and defaults, transcribed from its ``tasks/rl/train.py`` argument parser
# (kept separate from ``ctm_rl.official.REFERENCE_DEFAULTS`` so that a test can compare the two).
REFERENCE_MODEL_DEFAULTS: dict[str, Any] = {
    "d_model": 128,
    "d_input": 64,
    "synapse_depth": 1,
    "n_synch_out": 16,
    "neuron_select_type": "first-last",
    "iterations": 1,
    "memory_length": 5,
    "deep_memory": True,
    "memory_hidden_dims": 2,
    "dropout": 0.0,
    "do_normalisation": False,
    "continuous_state_trace": True,
}

# MiniGrid's symbolic vocabulary sizes (objects, colours, states) and the reference's embedding width.
MINIGRID_VOCAB = {"object": 11, "color": 6, "state": 3}
EMBED_DIM = 8
HEAD_WIDTH = 64  # the reference's actor/critic hidden width
UNET_MIN_WIDTH = 16  # SynapseUNET(minimum_width=16)

P = "recurrent_model."


def full_args(args: dict[str, Any]) -> dict[str, Any]:
    """``args`` completed with the reference's defaults for every model argument it leaves out."""
    return {**REFERENCE_MODEL_DEFAULTS, **args}


def is_minigrid(args: dict[str, Any]) -> bool:
    return "MiniGrid" in str(args.get("env_id", ""))


# --- building blocks, written as the reference's modules compute them ---------------------------------


def linear(sd: StateDict, key: str, x: Tensor) -> Tensor:
    return F.linear(x, sd[f"{key}.weight"], sd[f"{key}.bias"])


def layer_norm(sd: StateDict, key: str, x: Tensor) -> Tensor:
    weight = sd[f"{key}.weight"]
    return F.layer_norm(x, weight.shape, weight, sd[f"{key}.bias"], eps=1e-5)


def glu_mlp(sd: StateDict, key: str, x: Tensor, first: int) -> Tensor:
    """``Linear, GLU, LayerNorm, Linear, GLU, LayerNorm`` whose first Linear sits at index ``first``."""
    x = layer_norm(sd, f"{key}.{first + 2}", F.glu(linear(sd, f"{key}.{first}", x), dim=-1))
    return layer_norm(sd, f"{key}.{first + 5}", F.glu(linear(sd, f"{key}.{first + 3}", x), dim=-1))


def unet_widths(d_model: int, depth: int) -> list[int]:
    """``SynapseUNET`` widths: ``np.linspace(out_dims, minimum_width, depth)`` cast to int."""
    return [int(w) for w in np.linspace(d_model, UNET_MIN_WIDTH, depth)]


def synapse_unet(sd: StateDict, x: Tensor, depth: int) -> Tensor:
    """``SynapseUNET.forward``: down the widths, then up with re-normalised skip connections."""
    key = P + "synapses"

    def block(name: str, h: Tensor) -> Tensor:  # Sequential(Dropout, Linear, LayerNorm, SiLU)
        return F.silu(layer_norm(sd, f"{name}.2", linear(sd, f"{name}.1", h)))

    first = f"{key}.first_projection"  # Sequential(Linear, LayerNorm, SiLU)
    outs_down = [F.silu(layer_norm(sd, f"{first}.1", linear(sd, f"{first}.0", x)))]
    for i in range(depth - 1):
        outs_down.append(block(f"{key}.down_projections.{i}", outs_down[-1]))
    out = outs_down[-1]
    n_blocks = depth - 1
    for i in range(n_blocks):
        idx = n_blocks - 1 - i
        up = block(f"{key}.up_projections.{idx}", out)
        out = layer_norm(sd, f"{key}.skip_lns.{idx}", up + outs_down[idx])
    return out


def super_linear(sd: StateDict, key: str, x: Tensor, do_norm: bool) -> Tensor:
    """``SuperLinear``: a private linear map per neuron; ``w1`` ``(in, out, D)``, ``b1`` ``(1, D, out)``."""
    if do_norm:
        x = layer_norm(sd, f"{key}.layernorm", x)
    out = torch.einsum("BDM,MHD->BDH", x, sd[f"{key}.w1"]) + sd[f"{key}.b1"]
    return out.squeeze(-1) / sd[f"{key}.T"]


def trace_processor(sd: StateDict, pre: Tensor, args: dict[str, Any]) -> Tensor:
    """Neuron-level models over the pre-activation history ``(B, D, M)`` -> ``(B, D)``."""
    key, norm = P + "trace_processor.0", args["do_normalisation"]
    out = F.glu(super_linear(sd, f"{key}.0", pre, norm), dim=-1)
    if args["deep_memory"]:
        out = F.glu(super_linear(sd, f"{key}.2", out, norm), dim=-1)
    return out.squeeze(-1)


def backbone(sd: StateDict, x: Tensor, args: dict[str, Any]) -> Tensor:
    """Observation -> flat features ``(B, F)``."""
    if not is_minigrid(args):
        return glu_mlp(sd, P + "backbone.input_projector", x.flatten(1), first=1)  # index 0 is Flatten
    x = x.long()
    b, h, w, _ = x.shape
    pos = (torch.arange(h)[:, None] * w + torch.arange(w)[None, :]).expand(b, h, w)  # index h*W + w
    cells = torch.cat(
        [
            F.embedding(x[..., 0], sd[P + "backbone.object_embedding.weight"]),
            F.embedding(x[..., 1], sd[P + "backbone.color_embedding.weight"]),
            F.embedding(x[..., 2], sd[P + "backbone.state_embedding.weight"]),
            F.embedding(pos, sd[P + "backbone.position_embedding.weight"]),
        ],
        dim=-1,
    )
    return glu_mlp(sd, P + "backbone.project_to_d_projection", cells, first=0).reshape(b, -1)


def synchronisation(sd: StateDict, post: Tensor, n: int) -> Tensor:
    """Output synchronisation over the post-activation window, using the LAST ``n`` neurons."""
    s = post.permute(0, 2, 1)  # (B, M, D)
    m = s.shape[1]
    decay = torch.exp(-torch.arange(m - 1, -1, -1, dtype=s.dtype)[:, None]
                      * torch.clamp(sd[P + "decay_params_out"], 0, 4)[None])  # (M, P)
    triu = torch.triu(torch.ones(n, n, dtype=torch.bool))
    pairs = (s[:, :, -n:, None] * s[:, :, None, -n:])[:, :, triu]  # (B, M, P)
    return (decay[None] * pairs).sum(1) / torch.sqrt(decay.sum(0))[None]


def heads(sd: StateDict, sync: Tensor) -> tuple[Tensor, Tensor]:
    """Actor logits ``(B, A)`` and critic values ``(B,)``."""
    def mlp(name: str) -> Tensor:
        h = F.relu(linear(sd, f"{name}.0", sync))
        return linear(sd, f"{name}.4", F.relu(linear(sd, f"{name}.2", h)))

    return mlp("actor"), mlp("critic").squeeze(-1)


def env_step(sd: StateDict, args: dict[str, Any], x: Tensor, pre: Tensor, post: Tensor) -> dict[str, Tensor]:
    """One env step from histories ``pre``/``post`` ``(B, D, M)``: sync, logits, values, new histories."""
    features = backbone(sd, x, args)
    b = features.shape[0]
    for _ in range(args["iterations"]):
        syn_in = torch.cat([features.reshape(b, -1), post[:, :, -1]], dim=-1)
        if args["synapse_depth"] == 1:
            s = glu_mlp(sd, P + "synapses", syn_in, first=1)  # index 0 is Dropout
        else:
            s = synapse_unet(sd, syn_in, args["synapse_depth"])
        pre = torch.cat([pre[:, :, 1:], s[..., None]], dim=-1)
        z = trace_processor(sd, pre, args)
        post = torch.cat([post[:, :, 1:], z[..., None]], dim=-1)
    sync = synchronisation(sd, post, args["n_synch_out"])
    logits, values = heads(sd, sync)
    return {"synchronisation": sync, "action_logits": logits, "values": values, "pre": pre, "post": post}


@torch.no_grad()
def run_sequence(
    sd: StateDict, args: dict[str, Any], obs: Tensor, episode_starts: Tensor
) -> dict[str, np.ndarray]:
    """Run ``T`` env steps of ``B`` envs as the reference agent does (``obs`` ``(T, B, ...)``).

    Every env starts from the start traces; before each step, ``state = (1-done)*prev + done*start``
    (or always the start traces when ``continuous_state_trace`` is off).  Returns arrays named like the
    fixtures: ``synchronisation``, ``action_logits``, ``values`` ``(T, B, ...)`` and the final traces.
    """
    args = full_args(args)
    b = obs.shape[1]
    start_pre = sd[P + "start_trace"][None].expand(b, -1, -1)
    start_post = sd[P + "start_activated_trace"][None].expand(b, -1, -1)
    pre, post = start_pre, start_post
    out: dict[str, list[Tensor]] = {"synchronisation": [], "action_logits": [], "values": []}
    for x, done in zip(obs, episode_starts):
        if args["continuous_state_trace"]:
            d = done.float()[:, None, None]
            pre, post = (1 - d) * pre + d * start_pre, (1 - d) * post + d * start_post
        else:
            pre, post = start_pre, start_post
        step = env_step(sd, args, x, pre, post)
        pre, post = step["pre"], step["post"]
        for key, values in out.items():
            values.append(step[key])
    result = {k: torch.stack(v).numpy() for k, v in out.items()}
    result["final_pre_trace"], result["final_post_trace"] = pre.numpy(), post.numpy()
    return result


# --- random agents in the reference format ---------------------------------------------------------------


def state_dict_shapes(args: dict[str, Any], obs_shape: tuple[int, ...], n_actions: int) -> dict[str, tuple]:
    """Name and shape of every tensor of the reference agent's ``state_dict`` for this configuration."""
    a = full_args(args)
    d, m, h, n, di = a["d_model"], a["memory_length"], a["memory_hidden_dims"], a["n_synch_out"], a["d_input"]
    n_pairs = n * (n + 1) // 2
    shapes: dict[str, tuple] = {
        P + "start_trace": (d, m),
        P + "decay_params_out": (n_pairs,),
        P + "start_activated_trace": (d, m),
        P + "out_neuron_indices_left": (n,),
        P + "out_neuron_indices_right": (n,),
        P + "diagonal_mask_out": (n, n),
    }

    def glu(key: str, first: int, in_dim: int, out_dim: int) -> None:
        for i, (fan_in, fan_out) in ((first, (in_dim, out_dim)), (first + 3, (out_dim, out_dim))):
            shapes[f"{key}.{i}.weight"], shapes[f"{key}.{i}.bias"] = (2 * fan_out, fan_in), (2 * fan_out,)
            shapes[f"{key}.{i + 2}.weight"] = shapes[f"{key}.{i + 2}.bias"] = (fan_out,)

    if is_minigrid(a):
        height, width = obs_shape[:2]
        for name, size in (*MINIGRID_VOCAB.items(), ("position", height * width)):
            shapes[f"{P}backbone.{name}_embedding.weight"] = (size, EMBED_DIM)
        glu(P + "backbone.project_to_d_projection", 0, 4 * EMBED_DIM, di)
        feature_dim = height * width * di
    else:
        glu(P + "backbone.input_projector", 1, math.prod(obs_shape), di)
        feature_dim = di

    syn_in = feature_dim + d
    if a["synapse_depth"] == 1:
        glu(P + "synapses", 1, syn_in, d)
    else:
        w = unet_widths(d, a["synapse_depth"])
        key = P + "synapses"
        first = f"{key}.first_projection"
        shapes[f"{first}.0.weight"], shapes[f"{first}.0.bias"] = (w[0], syn_in), (w[0],)
        shapes[f"{first}.1.weight"] = shapes[f"{first}.1.bias"] = (w[0],)
        for i in range(a["synapse_depth"] - 1):
            for kind, (w_in, w_out) in (("down", (w[i], w[i + 1])), ("up", (w[i + 1], w[i]))):
                block = f"{key}.{kind}_projections.{i}"
                shapes[f"{block}.1.weight"], shapes[f"{block}.1.bias"] = (w_out, w_in), (w_out,)
                shapes[f"{block}.2.weight"] = shapes[f"{block}.2.bias"] = (w_out,)
            shapes[f"{key}.skip_lns.{i}.weight"] = shapes[f"{key}.skip_lns.{i}.bias"] = (w[i],)

    layers = [(0, m, 2 * h), (2, h, 2)] if a["deep_memory"] else [(0, m, 2)]
    for index, in_dim, out_dim in layers:
        key = f"{P}trace_processor.0.{index}"
        shapes[f"{key}.w1"], shapes[f"{key}.b1"] = (in_dim, out_dim, d), (1, d, out_dim)
        shapes[f"{key}.T"] = (1,)
        if a["do_normalisation"]:
            shapes[f"{key}.layernorm.weight"] = shapes[f"{key}.layernorm.bias"] = (in_dim,)

    for name, out_dim in (("actor", n_actions), ("critic", 1)):
        layers = ((n_pairs, HEAD_WIDTH), (HEAD_WIDTH, HEAD_WIDTH), (HEAD_WIDTH, out_dim))
        for i, (fan_in, fan_out) in enumerate(layers):
            shapes[f"{name}.{2 * i}.weight"], shapes[f"{name}.{2 * i}.bias"] = (fan_out, fan_in), (fan_out,)
    return shapes


def random_state_dict(
    args: dict[str, Any], obs_shape: tuple[int, ...], n_actions: int, generator: torch.Generator,
    decay_range: tuple[float, float] = (-1.0, 5.0),
) -> StateDict:
    """A reference-format ``state_dict`` with random values in EVERY parameter.

    Scales keep activations O(1) so a 1e-5 comparison is meaningful: linear weights ~ 1/sqrt(fan_in),
    LayerNorm gains around 1, temperatures in [0.5, 2].  The decay parameters are spread evenly over
    ``decay_range`` (default (-1, 5): some below 0 and some above 4, so the clamp is exercised) and shuffled.
    """
    a = full_args(args)
    n = a["n_synch_out"]
    sd: StateDict = {}
    for key, shape in state_dict_shapes(a, obs_shape, n_actions).items():
        def randn(*s: int) -> Tensor:
            return torch.randn(*s, generator=generator)

        if key.endswith(("out_neuron_indices_left", "out_neuron_indices_right")):
            sd[key] = torch.arange(n)
        elif key.endswith("diagonal_mask_out"):
            sd[key] = torch.triu(torch.ones(n, n)).bool()
        elif key.endswith("decay_params_out"):
            values = torch.linspace(*decay_range, shape[0])
            sd[key] = values[torch.randperm(shape[0], generator=generator)]
        elif key.endswith(".T"):
            sd[key] = 0.5 + 1.5 * torch.rand(shape, generator=generator)
        elif key.endswith("trace"):  # start traces
            sd[key] = 0.5 * randn(*shape)
        elif key.endswith("_embedding.weight"):
            sd[key] = randn(*shape)
        elif key.endswith(".w1"):  # (in, out, D)
            sd[key] = randn(*shape) / math.sqrt(shape[0])
        elif len(shape) == 2 and key.endswith(".weight"):  # Linear (out, in)
            sd[key] = randn(*shape) / math.sqrt(shape[1])
        elif key.endswith(".weight"):  # LayerNorm gains
            sd[key] = 1.0 + 0.3 * randn(*shape)
        else:  # biases, incl. the NLMs' (1, D, out)
            sd[key] = 0.2 * randn(*shape)
    return sd


def write_checkpoint(
    path: str | os.PathLike, state_dict: StateDict, args: dict[str, Any], omit: Iterable[str] = ()
) -> None:
    """Save ``state_dict`` in the reference's checkpoint format, with ``args`` as an ``argparse.Namespace``.

    ``omit`` names model arguments to leave out of ``args`` (as in checkpoints of older code versions),
    so that a loader must fall back on the reference defaults.
    """
    # Real checkpoints also carry the training arguments; a loader must ignore those it does not need.
    training = {"seed": 1, "num_envs": 4, "num_steps": 100, "lr": 1e-3, "gamma": 0.99, "update_epochs": 1}
    namespace = {"model_type": "ctm", **training, **args}
    for name in omit:
        namespace.pop(name, None)
    torch.save(
        {
            "model_state_dict": state_dict,
            "optimizer_state_dict": {"state": {},
                                     "param_groups": [{"lr": 1e-3, "params": list(range(len(state_dict)))}]},
            "global_step": 1000,
            "training_iteration": 4,
            "episode_rewards_tracking": [12.0, 20.0],
            "episode_lengths_tracking": [12, 20],
            "global_steps_tracking": [500, 1000],
            "args": argparse.Namespace(**namespace),
        },
        path,
    )
