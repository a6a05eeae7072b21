"""Plan and run the training runs of a benchmark: one ordinary training run per (agent, env, seed).

Layout under the output folder::

    OUT/runs/<env>/<agent>/seed_<S>/   a run directory (see ctm_rl.runs) plus benchmark.json (wall-clock)
    OUT/logs/<env>_<agent>_seed_<S>.log   what the run printed (and its traceback if it failed)

A run with ``final_model.zip`` is finished and is not trained again, so an interrupted benchmark is
continued by running the same command; an unfinished run is started again from scratch.  A finished run
whose config differs from the one planned for it is an error, so that one table never mixes runs of two
settings.
"""

from __future__ import annotations

import json
import multiprocessing
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agents import get_agent, probe_spaces, resolve_options
from agents.environment import check_env_id
from ctm_rl.config import ExperimentConfig, apply_overrides, build_dataclass, dump_config, read_config_file
from ctm_rl.errors import UserError
from ctm_rl.runs import RunDir, atomic_save

TIMING_NAME = "benchmark.json"

# The built-in base config: the hyper-parameters of configs/cartpole_masked.yaml, which work for every
# agent on the classic-control tasks (CTM-only policy options are left out, with a note, for the others).
DEFAULT_BASE: dict[str, Any] = {
    "description": "ctm-rl benchmark run",
    "agent": "ctm",
    "env": {"id": "CTM/CartPoleNoVel-v1", "n_envs": 8, "normalize_reward": True},
    "policy_kwargs": {"d_model": 64, "d_input": 64, "memory_length": 4, "memory_hidden_dims": 4,
                      "n_synch_out": 16, "iterations": 2},
    "algo_kwargs": {"n_steps": 128, "batch_size": 256, "n_epochs": 4, "learning_rate": "lin_1e-3",
                    "gamma": 0.99, "gae_lambda": 0.95, "clip_range": 0.2, "ent_coef": 0.01, "vf_coef": 0.5},
    "total_timesteps": 100_000,
    "eval": {"freq": 10_000, "n_episodes": 10, "deterministic": True},
    "checkpoint_freq": 0,  # a benchmark run restarts rather than resumes: no periodic checkpoints
    "seed": 0,
    "device": "cpu",  # several small runs in parallel: the CPU, one thread each
}


def slug(env_id: str) -> str:
    """``env_id`` as one path component (``CTM/CartPoleNoVel-v1`` -> ``CTM-CartPoleNoVel-v1``)."""
    return env_id.replace("/", "-").replace(":", "-")


@dataclass(frozen=True)
class RunTask:
    """One training run of the benchmark."""

    agent: str
    env_id: str
    seed: int
    config: dict[str, Any]  # the raw config, validated already; plain data so it pickles to a worker
    run_dir: Path
    log_path: Path

    @property
    def label(self) -> str:
        return f"{self.agent} on {self.env_id}, seed {self.seed}"

    @property
    def finished(self) -> bool:
        return RunDir(self.run_dir).final_model.is_file()


@dataclass(frozen=True)
class RunResult:
    """How one run went: its wall-clock and speed (from this call, or from when it was trained)."""

    task: RunTask
    status: str  # "trained", "skipped" (finished before), "failed" (raised) or "stopped" (by a signal)
    wall_s: float | None = None
    timesteps: int | None = None

    @property
    def steps_per_s(self) -> float | None:
        if not self.wall_s or self.timesteps is None:
            return None
        return self.timesteps / self.wall_s


def base_config(path: Path | None) -> dict[str, Any]:
    """The raw base config: the file at ``path``, or :data:`DEFAULT_BASE`."""
    return read_config_file(path) if path is not None else DEFAULT_BASE


def plan(agents: Sequence[str], env_ids: Sequence[str], seeds: Iterable[int], out: Path,
         base: dict[str, Any], overrides: Sequence[str] = (), total_timesteps: int | None = None
         ) -> list[RunTask]:
    """Every (agent, env, seed) run, each config validated, and every agent checked on every env.

    Raises :class:`~ctm_rl.errors.UserError` (one line) for an unknown agent or env id, a bad override
    or option name, or an agent that cannot act in an env, before anything is trained.
    """
    for agent in agents:
        get_agent(agent)
    for env_id in env_ids:
        check_env_id(env_id)
    seeds = list(seeds)
    tasks = []
    for env_id in env_ids:
        for agent in agents:
            fixed = [f"agent={agent}", f"env.id={env_id}"]
            if total_timesteps is not None:
                fixed.append(f"total_timesteps={total_timesteps}")
            raw = apply_overrides(base, [*overrides, *fixed])
            config = build_dataclass(ExperimentConfig, raw)
            spec = get_agent(agent)
            observation_space, _ = probe_spaces(config.env, spec)
            # Option names are checked here too, so that a misspelt --set fails now rather than in every run.
            resolve_options(spec, config, spec.policy_for(observation_space))
            for seed in seeds:
                run_dir = out / "runs" / slug(env_id) / agent / f"seed_{seed}"
                log_path = out / "logs" / f"{slug(env_id)}_{agent}_seed_{seed}.log"
                tasks.append(RunTask(agent, env_id, seed, {**raw, "seed": seed}, run_dir, log_path))
    return tasks


def read_timing(run_dir: Path) -> tuple[float | None, int | None]:
    """``(wall_s, timesteps)`` recorded when ``run_dir`` was trained, ``(None, None)`` if not recorded."""
    path = run_dir / TIMING_NAME
    if not path.is_file():
        return None, None
    data = json.loads(path.read_text(encoding="utf-8"))
    return data.get("wall_s"), data.get("timesteps")


def check_finished_config(task: RunTask) -> None:
    """Fail if the finished run of ``task`` was trained with another config than the one planned now."""
    planned = dump_config(build_dataclass(ExperimentConfig, task.config))
    if RunDir(task.run_dir).config.read_text(encoding="utf-8") != planned:
        raise UserError(f"{task.run_dir} was trained with another config than this benchmark's "
                        f"(compare its {RunDir(task.run_dir).config.name}): use another --out, or the same "
                        "options as before")


def _warm_up_worker() -> None:
    """Import the training stack and set one torch thread once per worker, before its first run, so that
    the import time is not counted in the first run's wall-clock."""
    import torch

    import ctm_rl.training  # noqa: F401

    torch.set_num_threads(1)


def train_one(task: RunTask) -> RunResult:
    """Train ``task`` in this process (a worker): 1 torch thread, output to its log file.

    Any error is written to the log and reported as ``failed``: one broken run must not stop the others.
    """
    import torch  # here: the worker sets its own thread count before any torch work

    from ctm_rl.training import start_training

    torch.set_num_threads(1)
    task.log_path.parent.mkdir(parents=True, exist_ok=True)
    with task.log_path.open("w", encoding="utf-8") as log:
        def say(message: str) -> None:
            log.write(message + "\n")
            log.flush()

        try:
            config = build_dataclass(ExperimentConfig, task.config)
            start = time.perf_counter()
            outcome = start_training(config, task.run_dir, overwrite=True, progress=False, log=say)
            wall = time.perf_counter() - start
        except Exception:  # noqa: BLE001  (recorded in the log; the benchmark goes on)
            log.write(traceback.format_exc())
            return RunResult(task, "failed")
    if outcome.interrupted_by is not None:  # unfinished: the next benchmark call trains it again
        return RunResult(task, "stopped")
    timing = {"wall_s": round(wall, 3), "timesteps": outcome.timesteps}
    atomic_save(task.run_dir / TIMING_NAME,
                lambda path: Path(path).write_text(json.dumps(timing) + "\n", encoding="utf-8"))
    return RunResult(task, "trained", wall, outcome.timesteps)


def run_all(tasks: Sequence[RunTask], workers: int, log: Callable[[str], None] = print) -> list[RunResult]:
    """Train the unfinished ``tasks`` on ``workers`` processes; finished ones are only read back."""
    results = []
    pending = []
    for task in tasks:
        if task.finished:
            check_finished_config(task)
            results.append(RunResult(task, "skipped", *read_timing(task.run_dir)))
        else:
            pending.append(task)
    if results:
        log(f"{len(results)} of {len(tasks)} runs already finished: skipped")
    if not pending:
        return results
    log(f"training {len(pending)} runs on {min(workers, len(pending))} worker processes "
        f"(logs in {pending[0].log_path.parent})")
    # spawn: a fresh interpreter per worker; forking a process that has used torch's thread pools can hang.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(pending)), mp_context=context,
                             initializer=_warm_up_worker) as pool:
        futures = [pool.submit(train_one, task) for task in pending]
        try:
            for done, future in enumerate(as_completed(futures), start=1):
                result = future.result()
                speed = f", {result.wall_s:.0f} s" if result.wall_s is not None else ""
                log(f"[{done}/{len(pending)}] {result.task.label}: {result.status}{speed}")
                results.append(result)
        except BaseException:
            # Ctrl-C (or a broken worker): queued runs must not start while the pool shuts down.
            for future in futures:
                future.cancel()
            raise
    order = {task.run_dir: index for index, task in enumerate(tasks)}
    return sorted(results, key=lambda result: order[result.task.run_dir])
