"""The search space of ``ctm-rl tune``: the hyper-parameters a trial samples, and the config changes they make.

Every agent searches the PPO parameters; ``ctm`` adds its CTM's size and BPTT length, ``lstm`` its LSTM's
width.  The config's ``tune:`` section narrows or fixes any of them by name (docs/TUNING.md)::

    tune:
      learning_rate: {low: 1.0e-4, high: 3.0e-3, log: true}   # a range (optional: step)
      n_envs: [16, 32]                                        # a list: one of these
      gamma: 0.99                                             # a value: fixed

Optuna cannot change a categorical's choices from one trial to the next, so no parameter's values depend
on another's.  Where values must fit each other, the config is made to fit instead: the batch size is the
rollout divided by ``n_minibatches``, ``n_synch_out`` is cut to ``d_model``, and ``bptt_steps`` is rounded
down to a divisor of ``n_steps``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import optuna

from ctm_rl.config import apply_overrides
from ctm_rl.errors import ConfigError, did_you_mean

Value = bool | int | float | str | None
SCHEDULES = ("constant", "linear")


@dataclass(frozen=True)
class Range:
    """Numbers from ``low`` to ``high``, on a log scale or in steps of ``step`` if asked."""

    low: float
    high: float
    log: bool = False
    step: float | None = None

    def describe(self) -> dict[str, Any]:
        return {"low": self.low, "high": self.high, "log": self.log, "step": self.step}


@dataclass(frozen=True)
class Choice:
    """One of ``values``; a single value is fixed (still recorded as the trial's parameter)."""

    values: tuple[Value, ...]

    def describe(self) -> list[Value]:
        return list(self.values)


Domain = Range | Choice


@dataclass(frozen=True)
class Parameter:
    """One hyper-parameter: its values' type and condition, its default domain, the agents it applies to.

    :param key: the config key it sets (dotted); ``None`` for those that only shape others' values.
    :param kind: ``int``, ``float`` or ``str``: the type of its values (an integer is also a float).
    :param valid: the condition on a value of type ``kind``, which ``requirement`` puts in words.
    :param null_means: what ``None`` stands for, if it is a value too (``bptt_steps``: the whole rollout).
    :param agents: the agents it applies to; empty: every agent.
    """

    name: str
    key: str | None
    kind: type
    default: Domain
    valid: Callable[[Any], bool]
    requirement: str
    null_means: str | None = None
    agents: tuple[str, ...] = ()

    def applies_to(self, agent: str) -> bool:
        return not self.agents or agent in self.agents


def _positive(value: float) -> bool:
    return value > 0


def _non_negative(value: float) -> bool:
    return value >= 0


def _fraction(value: float) -> bool:
    return 0 <= value <= 1


def _discount(value: float) -> bool:
    return 0 < value <= 1


# Default domains: RL-Zoo's PPO ranges, trimmed where a CTM makes the top end slow (epochs, rollout length).
PARAMETERS: dict[str, Parameter] = {
    parameter.name: parameter
    for parameter in (
        Parameter("learning_rate", "algo_kwargs.learning_rate", float, Range(1e-5, 1e-2, log=True),
                  _positive, "a positive number"),
        Parameter("lr_schedule", None, str, Choice(SCHEDULES), lambda value: value in SCHEDULES,
                  "'constant' or 'linear' (annealed to 0)"),
        Parameter("n_steps", "algo_kwargs.n_steps", int, Choice((32, 64, 128, 256, 512)), _positive,
                  "a positive integer"),
        Parameter("n_envs", "env.n_envs", int, Choice((4, 8, 16, 32)), _positive, "a positive integer"),
        Parameter("n_minibatches", None, int, Choice((1, 2, 4, 8)), _positive, "a positive integer"),
        Parameter("n_epochs", "algo_kwargs.n_epochs", int, Choice((1, 3, 5, 10)), _positive,
                  "a positive integer"),
        Parameter("gamma", "algo_kwargs.gamma", float, Choice((0.9, 0.95, 0.98, 0.99, 0.995, 0.999)),
                  _discount, "a number in (0, 1]"),
        Parameter("gae_lambda", "algo_kwargs.gae_lambda", float,
                  Choice((0.8, 0.9, 0.92, 0.95, 0.98, 0.99, 1.0)), _fraction, "a number in [0, 1]"),
        Parameter("ent_coef", "algo_kwargs.ent_coef", float, Range(1e-8, 0.1, log=True), _non_negative,
                  "a number >= 0"),
        Parameter("clip_range", "algo_kwargs.clip_range", float, Choice((0.1, 0.2, 0.3, 0.4)), _positive,
                  "a positive number"),
        Parameter("iterations", "policy_kwargs.iterations", int, Range(1, 5), _positive,
                  "a positive integer", agents=("ctm",)),
        Parameter("memory_length", "policy_kwargs.memory_length", int, Range(2, 8), _positive,
                  "a positive integer", agents=("ctm",)),
        Parameter("d_model", "policy_kwargs.d_model", int, Choice((32, 64, 128, 256)), _positive,
                  "a positive integer", agents=("ctm",)),
        Parameter("n_synch_out", "policy_kwargs.n_synch_out", int, Choice((8, 16, 32, 64)), _positive,
                  "a positive integer", agents=("ctm",)),
        Parameter("bptt_steps", "algo_kwargs.bptt_steps", int, Choice((None, 8, 16, 32)), _positive,
                  "a positive integer", null_means="the whole rollout", agents=("ctm",)),
        Parameter("lstm_hidden_size", "policy_kwargs.lstm_hidden_size", int, Choice((32, 64, 128, 256)),
                  _positive, "a positive integer", agents=("lstm",)),
    )
}

# Names a user may try that the space spells otherwise, and why.
_NOT_SEARCHED = {
    "batch_size": "the batch size is n_envs * n_steps / n_minibatches: narrow 'n_minibatches' instead",
}
_RANGE_KEYS = ("low", "high", "log", "step")


# --- the tune: section -------------------------------------------------------------------------------------


def _typed(value: Any, parameter: Parameter, key: str, nullable: bool = True) -> Value:
    """``value`` as a value of ``parameter`` (ints accepted for floats), or a one-line error.

    :param nullable: accept ``None`` if the parameter does (a range's bounds are numbers).
    """
    nullable = nullable and parameter.null_means is not None
    if value is None and nullable:
        return None
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if parameter.kind is float and number:
        value = float(value)
    ok = isinstance(value, parameter.kind) and not isinstance(value, bool)
    if not ok or not parameter.valid(value):
        requirement = f"null ({parameter.null_means}) or {parameter.requirement}" if nullable else parameter.requirement
        raise ConfigError(f"config key {key!r} must be {requirement}, got {value!r}")
    return value


def _range(data: Mapping[str, Any], parameter: Parameter, key: str) -> Range:
    for name in data:
        if name not in _RANGE_KEYS:
            raise ConfigError(f"unknown key {name!r} in the range {key!r}{did_you_mean(str(name), _RANGE_KEYS)}"
                              "; a range has low, high and optionally log or step")
    if parameter.kind is str:
        raise ConfigError(f"config key {key!r} takes a value or a list of values, not a range")
    missing = [name for name in ("low", "high") if name not in data]
    if missing:
        raise ConfigError(f"the range {key!r} needs {' and '.join(missing)}")
    low = _typed(data["low"], parameter, f"{key}.low", nullable=False)
    high = _typed(data["high"], parameter, f"{key}.high", nullable=False)
    if not low < high:
        raise ConfigError(f"the range {key!r} needs low < high, got low {low!r} and high {high!r} "
                          "(a single value fixes the parameter)")
    log = data.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"config key {key + '.log'!r} must be true or false, got {log!r}")
    if log and low <= 0:
        raise ConfigError(f"the log range {key!r} needs low > 0, got {low!r}")
    step = data.get("step")
    if step is not None:
        step = _typed(step, parameter, f"{key}.step", nullable=False)
        if log:
            raise ConfigError(f"the range {key!r} cannot have both log and step")
    return Range(low, high, log, step)


def _domain(spec: Any, parameter: Parameter, key: str) -> Domain:
    if isinstance(spec, Mapping):
        return _range(spec, parameter, key)
    if isinstance(spec, list):
        if not spec:
            raise ConfigError(f"config key {key!r} is an empty list: give at least one value")
        values = tuple(_typed(value, parameter, f"{key}[{index}]") for index, value in enumerate(spec))
        if len(set(values)) < len(values):
            raise ConfigError(f"config key {key!r} lists a value twice: {spec!r}")
        return Choice(values)
    return Choice((_typed(spec, parameter, key),))


@dataclass(frozen=True)
class SearchSpace:
    """The domain of every parameter of one agent, in :data:`PARAMETERS` order."""

    agent: str
    domains: dict[str, Domain]

    @property
    def searched(self) -> list[str]:
        """The parameters with more than one value (the others are fixed)."""
        return [name for name, domain in self.domains.items()
                if not (isinstance(domain, Choice) and len(domain.values) == 1)]

    def describe(self) -> dict[str, Any]:
        """Plain data of the space (JSON), stored with the study to recognise it when it is resumed."""
        return {"agent": self.agent, **{name: domain.describe() for name, domain in self.domains.items()}}

    def sample(self, trial: optuna.Trial) -> dict[str, Value]:
        """Draw every parameter for ``trial`` (fixed ones too, so that each trial records its full set)."""
        params = {}
        for name, domain in self.domains.items():
            if isinstance(domain, Choice):
                params[name] = trial.suggest_categorical(name, list(domain.values))
            elif PARAMETERS[name].kind is int:
                params[name] = trial.suggest_int(name, int(domain.low), int(domain.high),
                                                 step=int(domain.step or 1), log=domain.log)
            else:
                params[name] = trial.suggest_float(name, domain.low, domain.high, step=domain.step,
                                                   log=domain.log)
        return params


def parse_space(section: Mapping[str, Any], agent: str) -> tuple[SearchSpace, list[str]]:
    """The search space of ``agent`` narrowed by a config's ``tune:`` ``section``, and the names in the
    section that belong to other agents' spaces (ignored, so one config tunes any agent)."""
    for name in section:
        if name not in PARAMETERS:
            if name in _NOT_SEARCHED:
                raise ConfigError(f"config key 'tune.{name}' is not a parameter of the search: "
                                  f"{_NOT_SEARCHED[name]}")
            raise ConfigError(f"unknown config key 'tune.{name}': not a parameter of the search"
                              f"{did_you_mean(str(name), PARAMETERS, 'tune.')}")
    # Every entry is checked, other agents' too: a mistake must not wait for the agent it belongs to.
    narrowed = {name: _domain(spec, PARAMETERS[name], f"tune.{name}") for name, spec in section.items()}
    ignored = [f"tune.{name}" for name in section if not PARAMETERS[name].applies_to(agent)]
    domains = {name: narrowed.get(name, parameter.default)
               for name, parameter in PARAMETERS.items() if parameter.applies_to(agent)}
    return SearchSpace(agent, domains), ignored


# --- from parameters to a config ---------------------------------------------------------------------------


def _divisor_at_most(n: int, limit: int) -> int:
    """The largest divisor of ``n`` that is at most ``limit``."""
    return max(d for d in range(1, min(limit, n) + 1) if n % d == 0)


def config_updates(params: Mapping[str, Value]) -> dict[str, Value]:
    """The config values (by dotted key) a trial's ``params`` set, made to fit each other."""
    updates = {PARAMETERS[name].key: value for name, value in params.items() if PARAMETERS[name].key}
    rate = params["learning_rate"]
    # lin_<x>: the linear schedule spelling of agents.options; repr keeps every digit of the sample.
    updates["algo_kwargs.learning_rate"] = f"lin_{rate!r}" if params["lr_schedule"] == "linear" else rate
    rollout = params["n_envs"] * params["n_steps"]
    # SB3 needs minibatches of at least 2 steps (it normalises advantages within each).
    updates["algo_kwargs.batch_size"] = max(2, rollout // params["n_minibatches"])
    if "n_synch_out" in params:
        updates["policy_kwargs.n_synch_out"] = min(params["n_synch_out"], params["d_model"])
    if params.get("bptt_steps") is not None:
        updates["algo_kwargs.bptt_steps"] = _divisor_at_most(params["n_steps"], params["bptt_steps"])
    return updates


def apply_params(raw: Mapping[str, Any], params: Mapping[str, Value]) -> dict[str, Any]:
    """A copy of the raw config ``raw`` with a trial's ``params`` applied (see :func:`config_updates`)."""
    # JSON spells each value as YAML does (null, numbers, quoted strings): apply_overrides parses it back.
    return apply_overrides(dict(raw), [f"{key}={json.dumps(value)}" for key, value in config_updates(params).items()])
