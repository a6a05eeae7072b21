"""A config's ``algo_kwargs`` and ``policy_kwargs``, checked and converted for one agent.

Names are checked against the agent's constructor signatures, values against their type hints.  YAML
cannot hold callables or classes, so two spellings stand for them: ``lin_<x>`` is a linear schedule
from ``x`` down to 0 (RL-Zoo's convention, e.g. ``learning_rate: lin_1e-3``), and a class is named by
an activation name (``relu``, ``tanh``, ...) or a dotted path (``torch.nn.ReLU``).

One config can run any agent: an option that belongs to another registered agent (``d_model`` when
running ``lstm``, ``bptt_steps`` when running ``mlp``) is left out and reported, not an error.
"""

from __future__ import annotations

import collections.abc
import inspect
import types
import typing
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Union

from stable_baselines3.common.utils import LinearSchedule
from torch import nn

from agents.registry import AGENTS, AgentSpec
from ctm_rl.config import ExperimentConfig, import_object
from ctm_rl.errors import ConfigError, did_you_mean

# Constructor parameters the config sets elsewhere (top-level keys) or that the run directory owns.
_ALGO_RESERVED = frozenset({"self", "policy", "env", "policy_kwargs", "tensorboard_log", "verbose", "seed",
                            "device", "_init_setup_model"})
_POLICY_RESERVED = frozenset({"self", "observation_space", "action_space", "lr_schedule"})

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU, "gelu": nn.GELU, "silu": nn.SiLU,
    "leaky_relu": nn.LeakyReLU,
}
_SCHEDULE_PREFIX = "lin_"


@dataclass
class AgentOptions:
    """What to pass to the agent's constructor, and which config options did not apply to it."""

    algo_kwargs: dict[str, Any]
    policy_kwargs: dict[str, Any]
    ignored: list[str] = field(default_factory=list)  # e.g. ["policy_kwargs.d_model"]


def _type_hints(function: Any) -> dict[str, Any]:
    """``function``'s resolved annotations; those naming types imported only for type checkers (SB3's
    ``PPO.__init__`` annotates ``env`` with such a ``VecEnv``) are left out instead of failing them all."""
    try:
        return typing.get_type_hints(function)
    except NameError:
        hints = {}
        for name, annotation in function.__annotations__.items():
            holder = types.SimpleNamespace(__annotations__={name: annotation})
            try:
                hints.update(typing.get_type_hints(holder, globalns=function.__globals__))
            except NameError:
                continue
        return hints


@cache
def _parameters(function: Any, reserved: frozenset[str]) -> dict[str, Any]:
    """Parameter name -> type hint (``Any`` where none) of ``function``, less ``reserved`` names."""
    hints = _type_hints(function)
    names = [p for p in inspect.signature(function).parameters if p not in reserved]
    return {name: hints.get(name, Any) for name in names}


def algo_options(spec: AgentSpec) -> dict[str, Any]:
    """``algo_kwargs`` names (and type hints) the agent accepts."""
    return _parameters(spec.algo.__init__, _ALGO_RESERVED)


def policy_options(spec: AgentSpec, policy: str) -> dict[str, Any]:
    """``policy_kwargs`` names (and type hints) of the agent's policy ``policy``."""
    return _parameters(spec.algo.policy_aliases[policy].__init__, _POLICY_RESERVED)


def _other_agents_options(section: str) -> set[str]:
    names: set[str] = set()
    for spec in AGENTS.values():
        if section == "algo_kwargs":
            names |= set(algo_options(spec))
        else:
            names |= set(policy_options(spec, spec.policy)) | set(policy_options(spec, spec.dict_policy))
    return names


def _alternatives(hint: Any) -> list[Any]:
    """The members of a ``Union``/``Optional`` hint (the hint itself otherwise)."""
    if typing.get_origin(hint) in (Union, types.UnionType):
        return [arg for member in typing.get_args(hint) for arg in _alternatives(member)]
    return [hint]


_DESCRIPTIONS: dict[Any, str] = {
    bool: "true or false", int: "an integer", float: "a number", str: "a string", type(None): "null",
    list: "a list", dict: "a mapping", collections.abc.Callable: "a schedule like 'lin_1e-3'",
    type: "a class (an activation name like 'tanh' or a dotted path like 'torch.nn.Tanh')",
}


def _convert_value(value: Any, hint: Any, key: str) -> Any:
    """``value`` for a parameter with type ``hint``, converting the schedule and class spellings."""
    accepted = {typing.get_origin(m) or m for m in _alternatives(hint)}
    if isinstance(value, str):
        if collections.abc.Callable in accepted and value.startswith(_SCHEDULE_PREFIX):
            try:
                start = float(value[len(_SCHEDULE_PREFIX):])
            except ValueError:
                raise ConfigError(f"config key {key!r}: {value!r} is not a linear schedule "
                                  "like 'lin_1e-3'") from None
            return LinearSchedule(start=start, end=0.0, end_fraction=1.0)
        if type in accepted:
            return ACTIVATIONS.get(value.lower()) or import_object(value, key)
    if not accepted <= set(_DESCRIPTIONS):
        return value  # Any, tuples, ...: left to the constructor, whose errors are reported as config errors
    if isinstance(value, bool):
        ok = bool in accepted
    elif isinstance(value, int) and int not in accepted and float in accepted:
        ok, value = True, float(value)
    else:
        ok = any(isinstance(value, t) for t in accepted - {collections.abc.Callable, type})
    if not ok:
        expected = " or ".join(_DESCRIPTIONS[t] for t in _DESCRIPTIONS if t in accepted)
        raise ConfigError(f"config key {key!r} must be {expected}, got {value!r} ({type(value).__name__})")
    return value


def _resolve_section(given: dict[str, Any], options: dict[str, Any], section: str, spec: AgentSpec,
                     owner: str, ignored: list[str]) -> dict[str, Any]:
    others = _other_agents_options(section)
    resolved = {}
    for name, value in given.items():
        key = f"{section}.{name}"
        if name in options:
            resolved[name] = _convert_value(value, options[name], key)
        elif name in others:
            ignored.append(key)
        else:
            raise ConfigError(f"unknown option {key!r} for agent {spec.name!r} ({owner})"
                              f"{did_you_mean(str(name), options, f'{section}.')}")
    return resolved


def resolve_options(spec: AgentSpec, config: ExperimentConfig, policy: str) -> AgentOptions:
    """The agent's constructor keyword arguments from ``config`` (policy alias ``policy``)."""
    ignored: list[str] = []
    algo_kwargs = _resolve_section(config.algo_kwargs, algo_options(spec), "algo_kwargs", spec,
                                   spec.algo.__name__, ignored)
    policy_kwargs = _resolve_section(config.policy_kwargs, policy_options(spec, policy), "policy_kwargs",
                                     spec, policy, ignored)
    return AgentOptions(algo_kwargs, policy_kwargs, ignored)
