"""Experiment configs: schema, overrides, YAML details and the shipped config files."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from agents import AGENTS, get_agent, probe_spaces, resolve_options
from ctm_rl.config import (
    EnvConfig,
    ExperimentConfig,
    apply_overrides,
    build_dataclass,
    dump_config,
    import_object,
    load_config,
    parse_yaml,
)
from ctm_rl.errors import ConfigError

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
SHIPPED = sorted(CONFIGS.rglob("*.yaml"))
MINIMAL = {"env": {"id": "CartPole-v1"}}


def write(tmp_path: Path, data: dict, name: str = "experiment.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_minimal_config_gets_the_defaults():
    config = build_dataclass(ExperimentConfig, MINIMAL)
    assert config.env == EnvConfig(id="CartPole-v1")
    assert (config.agent, config.seed, config.eval.deterministic) == ("ctm", 0, True)


@pytest.mark.parametrize("data, message", [
    ({**MINIMAL, "total_timestep": 5}, "key 'total_timestep' (did you mean 'total_timesteps'?)"),
    ({"env": {"id": "CartPole-v1", "n_env": 2}}, "key 'env.n_env' (did you mean 'env.n_envs'?)"),
    ({"env": {"id": "CartPole-v1", "n_envs": "eight"}}, "'env.n_envs' must be an integer, got 'eight' (str)"),
    ({"env": {"id": "CartPole-v1", "n_envs": True}}, "'env.n_envs' must be an integer, got True"),
    ({"env": {"id": "CartPole-v1", "n_envs": 2.5}}, "'env.n_envs' must be an integer"),
    ({"env": {"id": "CartPole-v1", "n_envs": 0}}, "'env.n_envs' must be at least 1"),
    ({"env": {"id": "CartPole-v1", "vec_env": "subprocess"}}, "(did you mean 'subproc'?)"),
    ({**MINIMAL, "eval": {"freq": "often"}}, "'eval.freq' must be an integer"),
    ({**MINIMAL, "policy_kwargs": [1, 2]}, "'policy_kwargs' must be a mapping"),
    ({**MINIMAL, "eval": 3}, "eval must be a mapping"),
    ({"agent": "ctm"}, "the config has no 'env'"),
    ({"env": {"n_envs": 2}}, "the config has no 'env.id'"),
])
def test_schema_errors_name_the_key(data, message):
    with pytest.raises(ConfigError) as error:
        build_dataclass(ExperimentConfig, data)
    assert message in str(error.value)


def test_numbers_fit_their_fields():
    config = build_dataclass(ExperimentConfig, {**MINIMAL, "seed": None, "eval": {"freq": 0}})
    assert config.seed is None and config.eval.freq == 0


def test_yaml_reads_exponents_without_a_dot_as_floats():
    assert parse_yaml("lr: 1e-3\nother: 3.0E+2\nname: e5\nn: 10", "text") == {
        "lr": 0.001, "other": 300.0, "name": "e5", "n": 10}


@pytest.mark.parametrize("text, message", [
    ("seed: 1\nenv: [unclosed", "is not valid YAML (line 2)"),
    ("", "is empty"),
    ("- a list", "must hold a mapping"),
])
def test_bad_files(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(path)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_overrides_parse_yaml_values_and_reach_nested_keys(tmp_path):
    path = write(tmp_path, {**MINIMAL, "algo_kwargs": {"n_steps": 8}})
    config = load_config(path, ["algo_kwargs.n_steps=16", "policy_kwargs.net_arch=[32, 32]", "env.n_envs=3",
                                "algo_kwargs.learning_rate=lin_1e-3", "seed=null", "description=a b=c"])
    assert config.algo_kwargs == {"n_steps": 16, "learning_rate": "lin_1e-3"}
    assert config.policy_kwargs == {"net_arch": [32, 32]}
    assert (config.env.n_envs, config.seed, config.description) == (3, None, "a b=c")


def test_overrides_do_not_touch_the_original():
    raw = {"env": {"id": "CartPole-v1"}}
    apply_overrides(raw, ["env.id=Acrobot-v1"])
    assert raw == {"env": {"id": "CartPole-v1"}}


@pytest.mark.parametrize("override, message", [
    ("seed", "is not of the form key.path=value"),
    ("=3", "is not of the form key.path=value"),
    ("seed.value=3", "'seed' is a value, not a section"),
    ("env.n_envs=[1", "is not valid YAML"),
])
def test_bad_overrides(override, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides({"seed": 1, "env": {"id": "x"}}, [override])


def test_an_override_with_a_typo_is_an_unknown_key(tmp_path):
    with pytest.raises(ConfigError, match="unknown config key 'env.n_env'"):
        load_config(write(tmp_path, MINIMAL), ["env.n_env=2"])


def test_dump_and_load_round_trip(tmp_path):
    config = load_config(CONFIGS / "minigrid_fourrooms.yaml")
    path = tmp_path / "resolved.yaml"
    path.write_text(dump_config(config), encoding="utf-8")
    assert load_config(path) == config


def test_import_object():
    assert import_object("pathlib.Path", "key") is Path
    with pytest.raises(ConfigError, match="is not a dotted path"):
        import_object("Path", "key")
    with pytest.raises(ConfigError, match="cannot import 'no_such_module'"):
        import_object("no_such_module.Thing", "key")
    with pytest.raises(ConfigError, match=r"'pathlib' has no 'Pth' \(did you mean 'Path'\?\)"):
        import_object("pathlib.Pth", "key")


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_shipped_configs_are_valid_for_every_agent(path):
    """Each shipped config loads, makes its env, and runs with any agent (other agents' options left out)."""
    config = load_config(path)
    for name in AGENTS:
        agent = get_agent(name)
        observation_space, _ = probe_spaces(config.env, agent)
        options = resolve_options(agent, config, agent.policy_for(observation_space))
        if name == config.agent:
            assert options.ignored == []


def test_the_expected_configs_ship():
    names = {str(p.relative_to(CONFIGS)) for p in SHIPPED}
    assert {"quickstart.yaml", "cartpole_masked.yaml", "acrobot_masked.yaml", "minigrid_fourrooms.yaml",
            "paper/cartpole.yaml", "paper/acrobot.yaml", "paper/fourrooms.yaml", "memory.yaml", "memory_lstm.yaml",
            "tune/memory.yaml"} <= names


@pytest.mark.parametrize("name, envs, steps", [("cartpole", 256, 100), ("acrobot", 12, 100),
                                               ("fourrooms", 256, 50)])
def test_paper_configs_use_four_minibatches_and_the_reference_ppo(name, envs, steps):
    config = load_config(CONFIGS / "paper" / f"{name}.yaml")
    algo = config.algo_kwargs
    assert (config.env.n_envs, algo["n_steps"], algo["batch_size"]) == (envs, steps, envs * steps // 4)
    assert (algo["gamma"], algo["gae_lambda"], algo["clip_range"], algo["ent_coef"], algo["vf_coef"],
            algo["max_grad_norm"]) == (0.99, 0.95, 0.1, 0.1, 0.25, 0.5)
    assert algo["learning_rate"].startswith("lin_") and config.env.normalize_reward
    assert "bptt_steps" not in algo  # full backpropagation through each rollout, as the reference
