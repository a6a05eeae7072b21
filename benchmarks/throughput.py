"""Training throughput: CTMPPO against its baselines, every agent measured the same way in one run.

**Paper setting** (the default): the authors' masked-CartPole script, CTMPPO (full BPTT with the fused
backward pass or with plain autograd, chunked, compiled) and sb3-contrib's RecurrentPPO (LSTM).
``ctm-chunkN`` trains on N-step chunks (``bptt_steps=N``), for any N that divides the rollout.  d_model 128,
d_input 128, memory_length 20, memory_hidden_dims 4, n_synch_out 16, 2 ticks, 256 envs x 100 steps,
4 epochs, 4 minibatches.

    python benchmarks/throughput.py                  # everything, 2 iterations each
    python benchmarks/throughput.py --agents ctm-full --baseline ../old-checkout
    python benchmarks/throughput.py --agents ctm-full --profile

**Config setting** (``--env ID``): every agent built by ``ctm-rl train``'s own code from one config file
(``--config``, default ``configs/cartpole_masked.yaml``) with the env, ``--n-envs`` and ``--set`` overrides,
the batch size ``n_envs * n_steps / 4`` unless set: ``ctm`` (the config's BPTT), ``ctm-full``,
``ctm-chunkN``, ``lstm`` (``RecurrentPPO``, its width matched to the CTM's parameter count), ``mlp`` and
``framestack`` (PPO, the config's widths).  Each agent's rollout time is split into env stepping (the
``VecEnv``'s step), the policy (for the CTM: its backbone, i.e. the feature term, and its ticks), and the
rest (SB3's rollout loop: buffer, tensors, callbacks); the ratio to ``mlp`` is printed when it runs.

    python benchmarks/throughput.py --env CTM/Memory-L8-v0 --n-envs 64 --threads 1
    python benchmarks/throughput.py --env CTM/Memory-L8-v0 --n-envs 64 --set env.vec_env=batched

Reports env steps/s for the rollout alone, the update alone and end to end (rollout + update), and the
rollout buffer's memory.  Every agent runs in a process of its own, and the agents take turns: one
rollout + update iteration each, in reversed order every other round, after one warm-up iteration each.
The speed of a shared VM drifts by tens of percent within minutes; taking turns spreads that drift over
all agents alike, where measuring them one after the other would not.  ``--baseline`` adds another
checkout's ``ctm-full`` (e.g. an older commit, through ``git worktree add``) to the turns, to compare
commits on the same machine at the same time.  Never run by CI.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
import yaml
from sb3_contrib import RecurrentPPO
from stable_baselines3.common.env_util import make_vec_env

import envs  # noqa: F401  (registers CTM/CartPoleNoVel-v1)
from ctm_rl import CTMPPO

N_ENVS, N_STEPS, N_EPOCHS, N_MINIBATCHES = 256, 100, 4, 4
CTM_KWARGS = dict(d_model=128, d_input=128, memory_length=20, memory_hidden_dims=4, n_synch_out=16, iterations=2)
AGENTS = ("ctm-full", "ctm-autograd", "ctm-chunk10", "ctm-chunk20", "ctm-compiled", "lstm")
CONFIG_AGENTS = ("ctm", "ctm-full", "ctm-chunk16", "lstm", "mlp", "framestack")
ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = ROOT / "configs" / "cartpole_masked.yaml"


def build(agent: str, device: str):
    env = make_vec_env("CTM/CartPoleNoVel-v1", n_envs=N_ENVS, seed=0)
    common = dict(n_steps=N_STEPS, batch_size=N_ENVS * N_STEPS // N_MINIBATCHES, n_epochs=N_EPOCHS, seed=0,
                  device=device, learning_rate=1e-3)
    if agent == "lstm":
        return RecurrentPPO("MlpLstmPolicy", env, **common)
    bptt = chunk_steps(agent)
    policy_kwargs = dict(CTM_KWARGS, fused_backward=agent != "ctm-autograd")
    model = CTMPPO("CTMPolicy", env, bptt_steps=bptt, policy_kwargs=policy_kwargs, **common)
    if agent == "ctm-compiled":
        # The tick of the rollout's single env steps (training sequences run the fused pass).
        model.policy.ctm._tick = torch.compile(model.policy.ctm._tick, dynamic=False)
    return model


def config_overrides(setting: dict, agent: str) -> list[str]:
    """The ``--set`` overrides that make ``agent`` of the config setting ``setting``."""
    name = "ctm" if agent.startswith("ctm") else agent
    overrides = [f"env.id={setting['env']}", f"env.n_envs={setting['n_envs']}", "eval.freq=0", f"agent={name}",
                 *setting["overrides"]]
    if agent == "ctm-full":
        overrides.append("algo_kwargs.bptt_steps=null")
    elif agent.startswith("ctm-chunk"):
        overrides.append(f"algo_kwargs.bptt_steps={chunk_steps(agent)}")
    if agent == "lstm" and setting.get("lstm_width"):
        overrides.append(f"policy_kwargs.lstm_hidden_size={setting['lstm_width']}")
    return overrides


def load_setting_config(setting: dict, agent: str):
    """The experiment config of ``agent`` in the config setting, with the default batch size."""
    from ctm_rl.config import load_config

    config = load_config(setting["config"], config_overrides(setting, agent))
    if not any(item.startswith("algo_kwargs.batch_size=") for item in setting["overrides"]):
        n_steps = config.algo_kwargs.get("n_steps", 128)
        config = load_config(setting["config"], [*config_overrides(setting, agent),
                                                 f"algo_kwargs.batch_size={setting['n_envs'] * n_steps // 4}"])
    return config


def build_from_config(agent: str, device: str, setting: dict):
    """``agent`` of the config setting, built as ``ctm-rl train`` builds it (from the library on the path)."""
    from dataclasses import replace

    from agents import build_model, get_agent, make_env

    config = replace(load_setting_config(setting, agent), device=device, seed=0)
    env = make_env(config, get_agent(config.agent), n_envs=config.env.n_envs, seed=0, training=True)
    return build_model(config, env)[0]


class Timers:
    """Wall time spent in the parts of a rollout, accumulated by wrapping the methods that do them."""

    def __init__(self, model) -> None:
        self.seconds = {"env": 0.0, "policy": 0.0, "backbone": 0.0, "ticks": 0.0}
        policy = model.policy
        self._wrap(model.env, "step", "env")
        self._wrap(policy, "forward", "policy")
        if hasattr(policy, "ctm"):  # older checkouts (--baseline) had no feature term
            self._wrap(policy, "_feature_term" if hasattr(policy, "_feature_term") else "extract_features", "backbone")
            self._wrap(policy.ctm, "forward", "ticks")

    def _wrap(self, owner, name: str, part: str) -> None:
        original = getattr(owner, name)

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[part] += time.perf_counter() - start

        setattr(owner, name, timed)

    def take(self) -> dict[str, float]:
        seconds, self.seconds = self.seconds, dict.fromkeys(self.seconds, 0.0)
        return seconds


def chunk_steps(agent: str) -> int | None:
    """N for ``ctm-chunkN``, None for the other agents."""
    return int(agent.removeprefix("ctm-chunk")) if agent.startswith("ctm-chunk") else None


def is_agent(agent: str, config_mode: bool = False) -> bool:
    """Whether the benchmark knows ``agent`` (in the config setting, chunk lengths are checked by CTMPPO)."""
    if agent.startswith("ctm-chunk"):
        steps = agent.removeprefix("ctm-chunk")
        return steps.isdigit() and int(steps) > 0 and (config_mode or N_STEPS % int(steps) == 0)
    return agent in (CONFIG_AGENTS if config_mode else AGENTS)


def buffer_bytes(model) -> int:
    buffer = model.rollout_buffer
    arrays = [v for v in vars(buffer).values() if isinstance(v, np.ndarray)]
    arrays += [h for v in vars(buffer).values() if isinstance(v, tuple) for h in v if isinstance(h, np.ndarray)]
    return sum(a.nbytes for a in arrays)


def serve(root: Path, agent: str, device: str, threads: int, setting: dict | None) -> None:
    """The worker: build ``agent`` (paper setting: with the ``build`` of ``root``'s copy of this script;
    config setting: with this script's ``build_from_config`` and ``root``'s library), then time one rollout
    and one update for every line read from stdin, answering with a JSON line each."""
    answers, sys.stdout = sys.stdout, sys.stderr  # stdout carries the answers only
    torch.set_num_threads(threads)
    if setting is None:
        spec = importlib.util.spec_from_file_location("checkout_throughput", root / "benchmarks" / "throughput.py")
        checkout = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(checkout)
        model = checkout.build(agent, device)
    else:
        model = build_from_config(agent, device, setting)
    _, callback = model._setup_learn(10**9, None)
    timers = Timers(model)
    n_parameters = sum(p.numel() for p in model.policy.parameters())
    print(json.dumps({"buffer_mib": buffer_bytes(model) / 2**20, "parameters": n_parameters}), file=answers,
          flush=True)
    for _ in sys.stdin:
        start = time.perf_counter()
        model.collect_rollouts(model.env, callback, model.rollout_buffer, model.n_steps)
        middle = time.perf_counter()
        parts = timers.take()
        model._update_current_progress_remaining(model.num_timesteps, 10**9)
        model.train()
        timers.take()  # the update's own calls of the timed methods are not the rollout's
        print(json.dumps({"rollout": middle - start, "update": time.perf_counter() - middle, **parts}),
              file=answers, flush=True)


class Worker:
    """One agent in a process of its own (``serve``), from this checkout or another one."""

    def __init__(self, label: str, root: Path, agent: str, device: str, threads: int, setting: dict | None = None):
        self.label, self.rollout_s, self.update_s = label, 0.0, 0.0
        self.parts = {"env": 0.0, "policy": 0.0, "backbone": 0.0, "ticks": 0.0}
        # The checkout's own packages come first on the path, before the installed ones.
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, (str(root), os.environ.get("PYTHONPATH")))))
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(root), agent, device, str(threads), json.dumps(setting)],
            cwd=root, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        first = self._answer()
        self.buffer_mib, self.parameters = first["buffer_mib"], first["parameters"]

    def _answer(self) -> dict[str, float]:
        line = self.process.stdout.readline()
        if not line:
            raise SystemExit(f"throughput.py: the worker for {self.label} stopped (its error is above)")
        return json.loads(line)

    def iterate(self, measured: bool) -> None:
        self.process.stdin.write("\n")
        self.process.stdin.flush()
        times = self._answer()
        if measured:
            self.rollout_s += times["rollout"]
            self.update_s += times["update"]
            for part in self.parts:
                self.parts[part] += times[part]

    def close(self) -> None:
        try:
            self.process.stdin.close()
        except BrokenPipeError:  # the worker has stopped already
            pass
        self.process.wait()


def commit_of(root: Path) -> str:
    """The short commit of a checkout, or its folder's name outside git."""
    result = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            check=False)
    return result.stdout.strip() or root.name


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        root, agent, device, threads, setting = sys.argv[2:7]
        serve(Path(root), agent, device, int(threads), json.loads(setting))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", help=f"comma-separated, from {', '.join(AGENTS)} (or ctm-chunkN); with --env, "
                                         f"from {', '.join(CONFIG_AGENTS)} (default: all of them)")
    parser.add_argument("--env", help="the config setting on this env id (see the module docstring)")
    parser.add_argument("--n-envs", type=int, default=64, help="parallel envs, with --env (default 64)")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="the config file, with --env")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config overrides for every agent, with --env (repeatable)")
    parser.add_argument("--iterations", type=int, default=2, help="measured rollout+update iterations per agent")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--baseline", type=Path, help="another checkout of this project whose ctm-full takes turns too")
    parser.add_argument("--profile", action="store_true", help="print torch profiler tables for one rollout and update")
    args = parser.parse_args()
    config_mode = args.env is not None
    agents = (args.agents or ",".join(CONFIG_AGENTS if config_mode else AGENTS)).split(",")
    unknown = [agent for agent in agents if not is_agent(agent, config_mode)]
    if unknown:
        known = ", ".join(CONFIG_AGENTS) if config_mode else f"{', '.join(AGENTS)} (or ctm-chunkN, N dividing {N_STEPS})"
        parser.error(f"unknown agent {unknown[0]!r}: choose from {known}")
    if args.iterations < 1:
        parser.error("--iterations must be at least 1")
    if args.baseline is not None and not (args.baseline / "benchmarks" / "throughput.py").is_file():
        parser.error(f"--baseline {args.baseline}: no benchmarks/throughput.py there (a checkout of this project?)")
    torch.set_num_threads(args.threads)
    if config_mode:
        run_config_setting(args, agents)
        return
    if args.profile:
        for agent in agents:
            profile(agent, args.device)
        return

    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {args.device}, "
          f"{N_ENVS} envs x {N_STEPS} steps, {N_EPOCHS} epochs, {N_MINIBATCHES} minibatches")
    runs = [(agent, ROOT, agent) for agent in agents]
    if args.baseline is not None:
        runs.append((f"ctm-full@{commit_of(args.baseline)}", args.baseline.resolve(), "ctm-full"))
    workers = take_turns(runs, args, None)
    steps = N_ENVS * N_STEPS * args.iterations
    width = max(14, *(len(worker.label) + 2 for worker in workers))
    print(f"{'agent':<{width}}{'rollout/s':>12}{'update/s':>12}{'total/s':>12}{'buffer MiB':>12}")
    for worker in workers:
        print(f"{worker.label:<{width}}{steps / worker.rollout_s:>12.0f}{steps / worker.update_s:>12.0f}"
              f"{steps / (worker.rollout_s + worker.update_s):>12.0f}{worker.buffer_mib:>12.1f}")


def config_setting(args: argparse.Namespace, agents: list[str]) -> dict:
    """The config setting of the command line, checked, with the LSTM's matched width."""
    from agents.sizing import count_parameters, matching_width
    from ctm_rl.errors import UserError

    if args.n_envs < 1:
        raise SystemExit("throughput.py: error: --n-envs must be at least 1")
    setting = {"config": str(args.config.resolve()), "env": args.env, "n_envs": args.n_envs,
               "overrides": list(args.overrides)}
    try:
        for agent in agents:
            load_setting_config(setting, agent)
        if "lstm" in agents:
            target = count_parameters(load_setting_config(setting, "ctm"))
            setting["lstm_width"], _ = matching_width(load_setting_config(setting, "lstm"), target)
    except (UserError, yaml.YAMLError) as error:
        raise SystemExit(f"throughput.py: error: {error}") from None
    return setting


def run_config_setting(args: argparse.Namespace, agents: list[str]) -> None:
    """Time every agent of the config setting, taking turns, and print the table and the breakdown."""
    setting = config_setting(args, agents)
    config = load_setting_config(setting, agents[0])
    n_steps = config.algo_kwargs.get("n_steps", 128)
    print(f"torch {torch.__version__}, threads {args.threads}, device {args.device}, {args.env}, "
          f"{args.n_envs} envs x {n_steps} steps, config {args.config.name} {' '.join(args.overrides)}, "
          f"vec_env {config.env.vec_env}")
    runs = [(agent, ROOT, agent) for agent in agents]
    if args.baseline is not None:
        runs.append((f"ctm@{commit_of(args.baseline)}", args.baseline.resolve(), "ctm"))
    workers = take_turns(runs, args, setting)
    steps = args.n_envs * n_steps * args.iterations
    mlp = next((worker for worker in workers if worker.label == "mlp"), None)
    width = max(14, *(len(worker.label) + 2 for worker in workers))
    print(f"{'agent':<{width}}{'params':>10}{'rollout/s':>11}{'update/s':>11}{'total/s':>11}"
          f"{'x mlp':>8}{'buffer MiB':>12}")
    for worker in workers:
        total = steps / (worker.rollout_s + worker.update_s)
        ratio = f"{total / (steps / (mlp.rollout_s + mlp.update_s)):.2f}" if mlp else "-"
        print(f"{worker.label:<{width}}{worker.parameters:>10}{steps / worker.rollout_s:>11.0f}"
              f"{steps / worker.update_s:>11.0f}{total:>11.0f}{ratio:>8}{worker.buffer_mib:>12.1f}")
    print("\nwhere the time of one env step (all envs) goes, ms:")
    print(f"{'agent':<{width}}{'env':>9}{'backbone':>10}{'ticks':>9}{'heads':>9}{'SB3':>9}{'update':>9}{'total':>9}")
    per_step = 1e3 / (n_steps * args.iterations)
    for worker in workers:
        parts = worker.parts
        recurrent = parts["backbone"] + parts["ticks"]
        other_policy = parts["policy"] - recurrent  # heads (CTM); the whole network for the others
        sb3 = worker.rollout_s - parts["env"] - parts["policy"]
        cells = [parts["env"], parts["backbone"], parts["ticks"], other_policy, sb3, worker.update_s,
                 worker.rollout_s + worker.update_s]
        print(f"{worker.label:<{width}}" + "".join(f"{value * per_step:>{w}.2f}"
                                                   for value, w in zip(cells, (9, 10, 9, 9, 9, 9, 9))))
    print("(backbone and ticks: the CTM only; for the others 'heads' is the whole policy network)")


def take_turns(runs: list[tuple[str, Path, str]], args: argparse.Namespace, setting: dict | None) -> list[Worker]:
    """Start one worker per run, then let them take turns: one warm-up round, ``args.iterations`` measured."""
    workers = []
    try:
        for label, root, agent in runs:
            workers.append(Worker(label, root, agent, args.device, args.threads, setting))
        for round_ in range(args.iterations + 1):  # round 0 warms up (allocations, compilation)
            for worker in workers if round_ % 2 else workers[::-1]:
                worker.iterate(measured=round_ > 0)
    finally:
        for worker in workers:
            worker.close()
    return workers


def profile(agent: str, device: str) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    model = build(agent, device)
    _, callback = model._setup_learn(10**9, None)
    model.collect_rollouts(model.env, callback, model.rollout_buffer, N_STEPS)
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        model.collect_rollouts(model.env, callback, model.rollout_buffer, N_STEPS)
    print(f"--- {agent}: rollout ---")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=18))
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        model.train()
    print(f"--- {agent}: update ---")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=18))


if __name__ == "__main__":
    gym.logger.min_level = 40
    main()
