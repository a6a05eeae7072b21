"""Agents trained from one experiment config: ``ctm`` (CTMPPO), ``lstm`` (RecurrentPPO), ``mlp`` (PPO) and
``framestack`` (PPO on 4 stacked observations).

    from agents import AGENTS, build_model, make_env
    agent = AGENTS[config.agent]
    env = make_env(config, agent, n_envs=config.env.n_envs, seed=config.seed, training=True)
    model, ignored_options = build_model(config, env)
"""

from agents.environment import check_spaces, make_env, make_official_vec_env, official_env, probe_spaces
from agents.loading import LoadedAgent, load_agent
from agents.models import build_model, init_source, load_model, load_weights
from agents.options import resolve_options
from agents.registry import AGENTS, AgentSpec, get_agent

__all__ = [
    "AGENTS",
    "AgentSpec",
    "LoadedAgent",
    "build_model",
    "check_spaces",
    "get_agent",
    "init_source",
    "load_agent",
    "load_model",
    "load_weights",
    "make_env",
    "make_official_vec_env",
    "official_env",
    "probe_spaces",
    "resolve_options",
]
