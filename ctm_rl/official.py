"""The authors' checkpoints: safe loading and the mapping of their ``state_dict`` onto our modules.

The reference RL agent (Sakana AI, ``continuous-thought-machines``, ``tasks/rl``) saves a dict with
``model_state_dict`` and ``args`` (an ``argparse.Namespace``).  We load it with
``torch.load(weights_only=True)`` allowing only ``argparse.Namespace``, so no arbitrary object is ever
unpickled, and translate its parameter names to those of :class:`ctm_rl.policy.CTMPolicy`.
"""

from __future__ import annotations

import argparse
import os
import re
from typing import Any

import torch

# The reference's model arguments and their defaults (its ``tasks/rl/train.py``).
REFERENCE_DEFAULTS: dict[str, Any] = {
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

# Reference argument -> CTMPolicy keyword.
_ARG_TO_KWARG = {"deep_memory": "deep_nlms", "do_normalisation": "do_layernorm_nlm"}

# Reference parameter-name patterns -> ours (applied in order, first match wins); ``None`` drops the tensor.
_KEY_RULES: list[tuple[str, str | None]] = [
    # Neuron selection is recomputed by our model ('first-last' uses the last neurons, as the reference does).
    (r"recurrent_model\.(out_neuron_indices_(left|right)|diagonal_mask_out)$", None),
    (r"recurrent_model\.(start_trace|start_activated_trace|decay_params_out)$", r"ctm.\1"),
    (r"recurrent_model\.backbone\.input_projector\.(\d+)\.(weight|bias)$", r"features_extractor.net.projector.\1.\2"),
    (r"recurrent_model\.backbone\.project_to_d_projection\.(\d+)\.(weight|bias)$",
     r"features_extractor.net.projector.\1.\2"),
    (r"recurrent_model\.backbone\.(\w+_embedding)\.weight$", r"features_extractor.net.\1.weight"),
    (r"recurrent_model\.synapses\.(.+)$", r"ctm.synapses.\1"),
    (r"recurrent_model\.trace_processor\.0\.(\d+)\.w1$", r"ctm.nlm.layers.\1.weight"),
    (r"recurrent_model\.trace_processor\.0\.(\d+)\.b1$", r"ctm.nlm.layers.\1.bias"),
    (r"recurrent_model\.trace_processor\.0\.(\d+)\.T$", r"ctm.nlm.layers.\1.temperature"),
    (r"recurrent_model\.trace_processor\.0\.(\d+)\.layernorm\.(weight|bias)$", r"ctm.nlm.layers.\1.norm.\2"),
    (r"actor\.([02])\.(weight|bias)$", r"mlp_extractor.mlp.policy_net.\1.\2"),
    (r"critic\.([02])\.(weight|bias)$", r"mlp_extractor.mlp.value_net.\1.\2"),
    (r"actor\.4\.(weight|bias)$", r"action_net.\1"),
    (r"critic\.4\.(weight|bias)$", r"value_net.\1"),
]


class CheckpointError(ValueError):
    """A file is not a usable checkpoint of the authors' RL code."""


def map_reference_key(key: str) -> str | None:
    """Our parameter name for a reference ``state_dict`` key (``None``: not a parameter we keep)."""
    for pattern, replacement in _KEY_RULES:
        if re.match(pattern, key):
            return None if replacement is None else re.sub(pattern, replacement, key)
    raise CheckpointError(f"unknown parameter in the reference checkpoint: {key}")


def convert_reference_tensor(our_key: str, tensor: torch.Tensor) -> torch.Tensor:
    """Reference layout -> ours: neuron-level weights ``(in, out, D)`` -> ``(D, in, out)``, biases
    ``(1, D, out)`` -> ``(D, out)``; everything else is unchanged."""
    if re.match(r"ctm\.nlm\.layers\.\d+\.weight$", our_key):
        return tensor.permute(2, 0, 1).contiguous()
    if re.match(r"ctm\.nlm\.layers\.\d+\.bias$", our_key):
        return tensor.squeeze(0)
    return tensor


def convert_reference_state_dict(reference: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Translate a reference agent's ``state_dict`` into :class:`CTMPolicy` parameter names."""
    converted = {}
    for key, tensor in reference.items():
        ours = map_reference_key(key)
        if ours is not None:
            converted[ours] = convert_reference_tensor(ours, tensor)
    return converted


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load an authors' checkpoint safely: tensors, containers and ``argparse.Namespace`` only."""
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001  (torch raises many types for foreign or corrupt files)
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"cannot read {path} as an authors' checkpoint: {first_line}") from None
    if not isinstance(checkpoint, dict) or "model_state_dict" not in checkpoint:
        raise CheckpointError(f"{path} has no 'model_state_dict': not a checkpoint of the authors' RL code")
    return checkpoint


def checkpoint_args(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint's training arguments, with the reference's defaults for missing model arguments."""
    args = checkpoint.get("args")
    args = vars(args) if isinstance(args, argparse.Namespace) else dict(args or {})
    if args.get("model_type", "ctm") != "ctm":
        raise CheckpointError(f"checkpoint is of model_type {args['model_type']!r}; only 'ctm' is supported")
    args = {**REFERENCE_DEFAULTS, **args}
    if args["neuron_select_type"] != "first-last":
        # The reference RL agent computes synchronisation only for 'first-last'; other selections would
        # need its random neuron indices, which are not part of a reproducible configuration.
        raise CheckpointError(
            f"checkpoint uses neuron_select_type {args['neuron_select_type']!r}; the authors' RL agent "
            "supports only 'first-last'"
        )
    return args


def policy_kwargs_from_args(args: dict[str, Any]) -> dict[str, Any]:
    """``CTMPolicy`` keyword arguments reproducing the reference agent described by ``args``."""
    kwargs = {_ARG_TO_KWARG.get(name, name): args[name] for name in REFERENCE_DEFAULTS}
    kwargs["backbone"] = "minigrid" if "MiniGrid" in str(args.get("env_id", "")) else "classic"
    kwargs["sync_norm"] = False  # the reference's heads read the synchronisation directly
    return kwargs


# Our own buffers, recomputed rather than loaded (neuron pairs follow from the configuration).
_OWN_BUFFERS = ("ctm.synch_left", "ctm.synch_right")


def load_reference_weights(policy: torch.nn.Module, reference: dict[str, torch.Tensor]) -> None:
    """Copy a reference agent's weights into ``policy`` (a :class:`CTMPolicy`), checking every tensor.

    Raises :class:`CheckpointError` if a tensor's shape differs or if any of our parameters is left unset.
    """
    converted = convert_reference_state_dict(reference)
    state = policy.state_dict()
    for key in state:
        # SB3 registers the shared backbone under three names; all three take the same weights.
        source = re.sub(r"^(pi|vf)_features_extractor\.", "features_extractor.", key)
        if source in _OWN_BUFFERS:
            continue
        if source not in converted:
            raise CheckpointError(f"the reference checkpoint has no weights for {key}: configuration mismatch")
        if converted[source].shape != state[key].shape:
            raise CheckpointError(
                f"shape mismatch for {key}: checkpoint {tuple(converted[source].shape)}, "
                f"model {tuple(state[key].shape)}"
            )
        state[key] = converted[source]
    unused = set(converted) - {re.sub(r"^(pi|vf)_features_extractor\.", "features_extractor.", k) for k in state}
    if unused:
        raise CheckpointError(f"reference tensors with no place in the model: {sorted(unused)}")
    policy.load_state_dict(state)
