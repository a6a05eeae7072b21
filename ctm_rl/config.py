"""Experiment configs: one YAML file per experiment, validated into dataclasses with one-line errors.

A config names the env, the agent, the agent's ``policy_kwargs`` and ``algo_kwargs``, the training
length, evaluation and checkpointing.  ``--set key.path=value`` overrides any value before validation.
Which ``policy_kwargs``/``algo_kwargs`` names are valid depends on the agent, so :mod:`agents` checks
those; this module checks everything else.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

import yaml

from ctm_rl.errors import ConfigError, did_you_mean


class _Loader(yaml.SafeLoader):
    """YAML loader that also reads ``1e-3`` as a float (plain YAML 1.1 wants ``1.0e-3``, a classic trap)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.VERBOSE,
    ),
    list("-+0123456789."),
)


def parse_yaml(text: str, source: str) -> Any:
    """Parse YAML text; ``source`` names it in the error message."""
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"{source} is not valid YAML{line}: {problem}") from None


def _minimum(value: int) -> dict[str, Any]:
    return {"min": value}


@dataclass
class EnvConfig:
    """The training env: a gymnasium id, its wrappers and the vectorisation around it."""

    id: str
    n_envs: int = field(default=8, metadata=_minimum(1))
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    # Replaces the id's registered time limit; None keeps it.
    max_episode_steps: int | None = field(default=None, metadata=_minimum(1))
    # Gymnasium wrappers applied in order, RL-Zoo style: "module.Class" or {"module.Class": {kwargs}}.
    wrappers: list[Any] = field(default_factory=list)
    normalize_obs: bool = False
    # Returns-based reward scaling (SB3 VecNormalize), the counterpart of gymnasium's NormalizeReward.
    normalize_reward: bool = False
    # How the n_envs envs are stepped: one after the other (dummy), in worker processes (subproc), or, for the
    # CTM/ grid envs only, all at once with NumPy (batched: envs.batched.BatchedGridVecEnv, same trajectories).
    vec_env: str = field(default="dummy", metadata={"choices": ("dummy", "subproc", "batched")})

    @property
    def normalized(self) -> bool:
        """Whether the env is wrapped in VecNormalize, whose statistics are saved beside every model."""
        return self.normalize_obs or self.normalize_reward


@dataclass
class EvalConfig:
    """Periodic evaluation during training on a separate env (without reward normalisation)."""

    freq: int = field(default=10_000, metadata=_minimum(0))  # env steps between evaluations; 0: never
    n_episodes: int = field(default=10, metadata=_minimum(1))
    deterministic: bool = True


@dataclass
class ExperimentConfig:
    """One experiment: everything ``ctm-rl train`` needs, and what the run directory records."""

    env: EnvConfig
    agent: str = "ctm"
    description: str = ""
    policy_kwargs: dict[str, Any] = field(default_factory=dict)
    algo_kwargs: dict[str, Any] = field(default_factory=dict)
    total_timesteps: int = field(default=100_000, metadata=_minimum(1))
    eval: EvalConfig = field(default_factory=EvalConfig)
    checkpoint_freq: int = field(default=50_000, metadata=_minimum(0))  # env steps; 0: only at the end
    seed: int | None = 0
    device: str = "auto"
    # A warm start (e.g. a curriculum stage): a run directory or model .zip of the same agent and network
    # whose weights the new model starts from; "{seed}" and "{agent}" in it become the run's seed and agent,
    # so a benchmark starts each run from its own earlier one.  Optimizer, step count and schedules start fresh.
    init_from: str | None = None
    # The search space of `ctm-rl tune` (ctm_rl.tune.space checks it there); training ignores it, so that a
    # config written for tuning, or the best.yaml a study writes, trains as it is.
    tune: dict[str, Any] = field(default_factory=dict)


# --- validation -----------------------------------------------------------------------------------------


def _type_name(hint: Any) -> str:
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    if hint in names:
        return names[hint]
    return {dict: "a mapping", list: "a list"}.get(get_origin(hint), str(hint))


def _convert(value: Any, hint: Any, key: str) -> Any:
    """``value`` checked against the type ``hint`` of config ``key`` (ints are accepted as floats)."""
    if dataclasses.is_dataclass(hint):
        return build_dataclass(hint, value, key)
    if get_origin(hint) in (Union, types.UnionType):  # X | None
        if value is None:
            return None
        (hint,) = [arg for arg in get_args(hint) if arg is not type(None)]
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    expected = get_origin(hint) or hint
    # bool is an int subclass, but `n_envs: true` is surely a mistake
    if isinstance(value, expected) and not (expected is int and isinstance(value, bool)):
        return value
    shown = f"{value!r} ({type(value).__name__})" if value is not None else "null"
    raise ConfigError(f"config key {key!r} must be {_type_name(hint)}, got {shown}")


def _check_constraints(value: Any, metadata: Mapping[str, Any], key: str) -> None:
    if value is None:
        return
    if "min" in metadata and value < metadata["min"]:
        raise ConfigError(f"config key {key!r} must be at least {metadata['min']}, got {value!r}")
    if "choices" in metadata and value not in metadata["choices"]:
        choices = ", ".join(map(repr, metadata["choices"]))
        suggestion = did_you_mean(value, metadata["choices"])
        raise ConfigError(f"config key {key!r} must be one of {choices}, got {value!r}{suggestion}")


def build_dataclass(cls: type, data: Any, prefix: str = "") -> Any:
    """Instantiate the config dataclass ``cls`` from a mapping, checking keys, types and bounds."""
    where = prefix or "the config"
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where} must be a mapping of keys to values, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = get_type_hints(cls)
    section = f"{prefix}." if prefix else ""
    for key in data:
        if key not in fields:
            suggestion = did_you_mean(str(key), fields, section)
            raise ConfigError(f"unknown config key {section + str(key)!r}{suggestion}")
    values = {}
    for name, spec in fields.items():
        key = section + name
        if name not in data:
            if spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
                raise ConfigError(f"the config has no {key!r}: it is required")
            continue
        values[name] = _convert(data[name], hints[name], key)
        _check_constraints(values[name], spec.metadata, key)
    return cls(**values)


def import_object(path: str, key: str) -> Any:
    """The object a config names by dotted path (``package.module.Name``), for config ``key``."""
    module_name, _, name = path.rpartition(".")
    if not module_name:
        raise ConfigError(f"config key {key!r}: {path!r} is not a dotted path like 'package.module.Name'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigError(f"config key {key!r}: cannot import {module_name!r} ({error})") from None
    if not hasattr(module, name):
        suggestion = did_you_mean(name, dir(module))
        raise ConfigError(f"config key {key!r}: {module_name!r} has no {name!r}{suggestion}")
    return getattr(module, name)


# --- files and overrides --------------------------------------------------------------------------------


def apply_overrides(raw: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """A copy of ``raw`` with ``key.path=value`` overrides applied (values parsed as YAML)."""
    result = _deep_copy(raw)
    for override in overrides:
        path, sep, text = override.partition("=")
        if not sep or not path.strip():
            raise ConfigError(f"override {override!r} is not of the form key.path=value")
        keys = path.strip().split(".")
        node = result
        for depth, key in enumerate(keys[:-1]):
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                parent = ".".join(keys[: depth + 1])
                raise ConfigError(f"override {override!r}: {parent!r} is a value, not a section")
            node = child
        node[keys[-1]] = parse_yaml(text, f"the value of override {override!r}")
    return result


def _deep_copy(raw: dict[str, Any]) -> dict[str, Any]:
    return {key: _deep_copy(value) if isinstance(value, dict) else value for key, value in raw.items()}


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The raw mapping of a YAML config file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    raw = parse_yaml(path.read_text(encoding="utf-8"), str(path))
    if raw is None:
        raise ConfigError(f"{path} is empty")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a mapping of config keys, got {type(raw).__name__}")
    return raw


def load_config(path: str | Path, overrides: Iterable[str] = ()) -> ExperimentConfig:
    """Read, override and validate an experiment config file."""
    return build_dataclass(ExperimentConfig, apply_overrides(read_config_file(path), overrides))


def config_to_dict(config: ExperimentConfig) -> dict[str, Any]:
    """Plain dict of a config (what ``dump_config`` writes); an empty ``tune`` section is left out, so that
    the configs of runs that were never tuned read as they did before the section existed."""
    data = dataclasses.asdict(config)
    if not data["tune"]:
        del data["tune"]
    return data


def dump_config(config: ExperimentConfig) -> str:
    """YAML text of a resolved config, keys in schema order; ``load_config`` reads it back unchanged."""
    return yaml.safe_dump(config_to_dict(config), sort_keys=False, default_flow_style=False)
