"""Plan and run the training runs of a benchmark: one ordinary training run per (agent, env, seed).

Layout under the output folder::

    OUT/runs/<env>/<agent>/seed_<S>/   a run directory (see ctm_rl.runs) plus benchmark.json (wall-clock)
    OUT/logs/<env>_<agent>_seed_<S>.log   what the run printed (and its traceback if it failed)

A run with ``final_model.zip`` is finished and is not trained again, so an interrupted benchmark is
continued by running the same command; an unfinished run resumes from its latest checkpoint (periodic, or
the one a stop signal leaves), or starts again from scratch if it has none.  A run whose config differs
from the one planned for it is an error, so that one table never mixes runs of two settings.
"""

from __future__ import annotations

import dataclasses
import io
import json
import multiprocessing
import os
import shutil
import socket
import tarfile
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from stable_baselines3.common.callbacks import BaseCallback

from agents import get_agent, probe_spaces, resolve_options
from agents.environment import check_env_id
from agents.sizing import count_parameters, matching_width
from ctm_rl.config import ExperimentConfig, apply_overrides, build_dataclass, dump_config, read_config_file
from ctm_rl.errors import UserError
from ctm_rl.runs import RunDir, atomic_write_text
from ctm_rl.signals import detach_worker, stop_workers_on_signals, worker_stop_requested

TIMING_NAME = "benchmark.json"

# The built-in base config: the hyper-parameters of configs/cartpole_masked.yaml, which work for every
# agent on the classic-control tasks (CTM-only policy options are left out, with a note, for the others).
DEFAULT_BASE: dict[str, Any] = {
    "description": "ctm-rl benchmark run",
    "agent": "ctm",
    "env": {"id": "CTM/CartPoleNoVel-v1", "n_envs": 8, "normalize_reward": True},
    "policy_kwargs": {"d_model": 64, "d_input": 64, "memory_length": 4, "memory_hidden_dims": 4,
                      "n_synch_out": 16, "iterations": 2},
    "algo_kwargs": {"n_steps": 128, "batch_size": 256, "n_epochs": 4, "bptt_steps": 16,
                    "learning_rate": "lin_1e-3", "gamma": 0.99, "gae_lambda": 0.95, "clip_range": 0.2, "ent_coef": 0.01, "vf_coef": 0.5},
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
    n_params: int | None = None  # the policy's parameter count
    # Makes the callback run after each periodic evaluation (a factory, so that the task pickles to a
    # worker, where the callback is made); ``ctm-rl tune`` reports to its study and prunes with it.
    callback_after_eval: Callable[[], BaseCallback] | None = None

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


def base_configs(texts: Sequence[str], agents: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Each agent's raw base config from ``--config`` values: ``PATH`` (every agent) or ``AGENT=PATH`` (that
    agent: e.g. each agent's tuned config), the latter winning; :data:`DEFAULT_BASE` for an agent with none."""
    common: dict[str, Any] = DEFAULT_BASE
    specific: dict[str, dict[str, Any]] = {}
    for text in texts:
        agent, sep, path = text.partition("=")
        if not sep or not agent.isidentifier():  # a path (which may hold a '=')
            common = base_config(Path(text))
        elif agent not in agents:
            raise UserError(f"--config {text!r}: {agent!r} is not one of --agents ({', '.join(agents)})")
        else:
            specific[agent] = base_config(Path(path))
    return {agent: specific.get(agent, common) for agent in agents}


def check_run_config(raw: dict[str, Any]) -> ExperimentConfig:
    """The validated config of one run: its keys and values, its agent, its env id, and the agent's option
    names for that env's spaces, so that a misspelt ``--set`` fails at once rather than in every run."""
    config = build_dataclass(ExperimentConfig, raw)
    spec = get_agent(config.agent)
    observation_space, _ = probe_spaces(config.env, spec)
    resolve_options(spec, config, spec.policy_for(observation_space))
    return config


def plan(agents: Sequence[str], env_ids: Sequence[str], seeds: Iterable[int], out: Path,
         bases: Mapping[str, dict[str, Any]], overrides: Sequence[str] = (),
         total_timesteps: int | None = None, match_params: str | None = None) -> list[RunTask]:
    """Every (agent, env, seed) run, each config validated, and every agent checked on every env.

    :param bases: each agent's raw base config (:func:`base_configs`; ``match_params``'s too); the agent,
        env id, seed and length are set per run.
    :param match_params: an agent name: on each env, every other agent's network width
        (``AgentSpec.width_option``) is set so that its parameter count is as close as it gets to this
        agent's (which keeps its config).
    Raises :class:`~ctm_rl.errors.UserError` (one line) for an unknown agent or env id, a bad override
    or option name, or an agent that cannot act in an env, before anything is trained.
    """
    for agent in [*agents, *([match_params] if match_params else [])]:
        get_agent(agent)
    for env_id in env_ids:
        check_env_id(env_id)
    seeds = list(seeds)
    tasks = []
    length = [f"total_timesteps={total_timesteps}"] if total_timesteps is not None else []

    def raw_config(agent: str, env_id: str) -> dict[str, Any]:
        return apply_overrides(bases[agent], [*overrides, f"agent={agent}", f"env.id={env_id}", *length])

    for env_id in env_ids:
        target = None
        if match_params:
            target = count_parameters(build_dataclass(ExperimentConfig, raw_config(match_params, env_id)))
        for agent in agents:
            raw = raw_config(agent, env_id)
            config = check_run_config(raw)
            spec = get_agent(agent)
            if target is None:
                n_params = count_parameters(config)
            elif agent == match_params:
                n_params = target  # the reference keeps its config
            else:
                width, n_params = matching_width(config, target)
                raw["policy_kwargs"] = {**raw.get("policy_kwargs", {}), **spec.width_kwargs(width)}
            for seed in seeds:
                run_dir = out / "runs" / slug(env_id) / agent / f"seed_{seed}"
                log_path = out / "logs" / f"{slug(env_id)}_{agent}_seed_{seed}.log"
                tasks.append(RunTask(agent, env_id, seed, {**raw, "seed": seed}, run_dir, log_path, n_params))
    return tasks


def read_timing(run_dir: Path) -> tuple[float | None, int | None]:
    """``(wall_s, timesteps)`` recorded when ``run_dir`` was trained, ``(None, None)`` if not recorded."""
    path = run_dir / TIMING_NAME
    if not path.is_file():
        return None, None
    data = json.loads(path.read_text(encoding="utf-8"))
    return data.get("wall_s"), data.get("timesteps")


def check_run_dir_config(task: RunTask) -> None:
    """Fail if the run of ``task`` (finished, or to be resumed) was trained with another config than the
    one planned now."""
    planned = dump_config(build_dataclass(ExperimentConfig, task.config))
    if RunDir(task.run_dir).config.read_text(encoding="utf-8") != planned:
        raise UserError(f"{task.run_dir} was trained with another config than this benchmark's "
                        f"(compare its {RunDir(task.run_dir).config.name}): use another --out, or the same "
                        "options as before")


def warm_up_worker() -> None:
    """Import the training stack and set one torch thread once per worker, before its first run, so that
    the import time is not counted in the first run's wall-clock."""
    detach_worker()  # first: a stop signal during the imports is kept for the run, not fatal
    import torch

    import ctm_rl.training  # noqa: F401

    torch.set_num_threads(1)


def _resume_point(task: RunTask) -> int | None:
    """The step of the checkpoint ``task``'s unfinished run left to continue from (with its config), if any."""
    run = RunDir(task.run_dir)
    latest = run.latest_checkpoint() if run.config.is_file() else None
    return latest[0] if latest else None


def train_one(task: RunTask) -> RunResult:
    """Train ``task`` in this process (a worker): 1 torch thread, output to its log file.

    An unfinished run with a checkpoint is resumed from it; the wall-clock and step count recorded are then
    this call's.  Any error is written to the log and reported as ``failed``: one broken run must not stop
    the others.
    """
    import torch  # here: the worker sets its own thread count before any torch work

    from ctm_rl.training import resume_training, start_training

    torch.set_num_threads(1)
    if worker_stop_requested():  # the benchmark is stopping: a run it had queued here must not start
        return RunResult(task, "stopped")
    task.log_path.parent.mkdir(parents=True, exist_ok=True)
    resume_at = _resume_point(task)
    # Appended to on resume, so that the log keeps the whole run's story.
    with task.log_path.open("w" if resume_at is None else "a", encoding="utf-8") as log:
        def say(message: str) -> None:
            log.write(message + "\n")
            log.flush()

        try:
            config = build_dataclass(ExperimentConfig, task.config)
            callback = task.callback_after_eval() if task.callback_after_eval is not None else None
            start = time.perf_counter()
            if resume_at is not None:
                outcome = resume_training(task.run_dir, progress=False, log=say, callback_after_eval=callback)
            else:
                outcome = start_training(config, task.run_dir, overwrite=True, progress=False, log=say,
                                         callback_after_eval=callback)
            wall = time.perf_counter() - start
        except Exception:  # noqa: BLE001  (recorded in the log; the benchmark goes on)
            log.write(traceback.format_exc())
            return RunResult(task, "failed")
    if outcome.interrupted_by is not None:  # unfinished: the next benchmark call trains it again
        return RunResult(task, "stopped")
    trained = outcome.timesteps - (resume_at or 0)
    timing = {"wall_s": round(wall, 3), "timesteps": trained}
    if resume_at is not None:
        timing["resumed_at"] = resume_at
    atomic_write_text(task.run_dir / TIMING_NAME, json.dumps(timing) + "\n")
    return RunResult(task, "trained", wall, trained)


def _pending(tasks: Sequence[RunTask], log: Callable[[str], None]) -> tuple[list[RunResult], list[RunTask]]:
    """The results of the finished ``tasks`` (read back) and the tasks still to train."""
    results, pending = [], []
    for task in tasks:
        if task.finished:
            check_run_dir_config(task)
            results.append(RunResult(task, "skipped", *read_timing(task.run_dir)))
        else:
            if _resume_point(task) is not None:
                check_run_dir_config(task)
            pending.append(task)
    if results:
        log(f"{len(results)} of {len(tasks)} runs already finished: skipped")
    return results, pending


def _report_done(done: int, total: int, result: RunResult, log: Callable[[str], None]) -> None:
    speed = f", {result.wall_s:.0f} s" if result.wall_s is not None else ""
    log(f"[{done}/{total}] {result.task.label}: {result.status}{speed}")


def run_all(tasks: Sequence[RunTask], workers: int, log: Callable[[str], None] = print,
            ray_address: str | None = None) -> list[RunResult]:
    """Train the unfinished ``tasks`` on ``workers`` local processes, or as tasks of the Ray cluster at
    ``ray_address`` (``auto``, ``HOST:PORT``); finished ones are only read back."""
    results, pending = _pending(tasks, log)
    if pending:
        if ray_address is not None:
            results += _run_on_ray(pending, ray_address, log)
        else:
            results += _run_locally(pending, workers, log)
    order = {task.run_dir: index for index, task in enumerate(tasks)}
    return sorted(results, key=lambda result: order[result.task.run_dir])


def _run_locally(pending: Sequence[RunTask], workers: int, log: Callable[[str], None]) -> list[RunResult]:
    log(f"training {len(pending)} runs on {min(workers, len(pending))} worker processes "
        f"(logs in {pending[0].log_path.parent})")
    results = []
    # spawn: a fresh interpreter per worker; forking a process that has used torch's thread pools can hang.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(pending)), mp_context=context,
                             initializer=warm_up_worker) as pool:
        futures = [pool.submit(train_one, task) for task in pending]

        def cancel_queued() -> None:
            for future in futures:
                future.cancel()

        with stop_workers_on_signals(cancel_queued) as stop:
            try:
                for done, future in enumerate(as_completed(futures), start=1):
                    if future.cancelled():
                        continue
                    results.append(future.result())
                    _report_done(done, len(pending), results[-1], log)
            except BrokenProcessPool:
                cancel_queued()
                if not stop.requested:  # (a worker the signal reached while it started is no error)
                    raise
            except BaseException:
                cancel_queued()  # a broken worker: queued runs must not start while the pool shuts down
                raise
    if stop.requested:  # the stopped runs have saved checkpoints: the next call resumes them
        raise KeyboardInterrupt
    return results


# --- Ray -------------------------------------------------------------------------------------------------
# A Ray task trains into a temporary folder on whichever node runs it and returns that folder as a tar
# archive, which the driver unpacks into --out: the layout is the same as a local benchmark's, and no
# shared filesystem is needed.

_RUN_MEMBER, _LOG_MEMBER = "run", "run.log"


def train_packed(task: RunTask) -> tuple[str, float | None, int | None, bytes]:
    """Train ``task`` in a temporary folder; ``(status, wall_s, timesteps, tar archive of run and log)``."""
    with tempfile.TemporaryDirectory(prefix="ctm-rl-bench-") as tmp:
        local = dataclasses.replace(task, run_dir=Path(tmp) / _RUN_MEMBER, log_path=Path(tmp) / _LOG_MEMBER)
        result = train_one(local)
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
            for member in (_RUN_MEMBER, _LOG_MEMBER):
                if (Path(tmp) / member).exists():
                    archive.add(Path(tmp) / member, arcname=member)
    return result.status, result.wall_s, result.timesteps, buffer.getvalue()


def unpack_run(task: RunTask, archive_bytes: bytes) -> None:
    """Put a :func:`train_packed` archive in place: the run folder replaces ``task.run_dir`` (whole,
    by a rename, so a half-written run never looks finished), the log goes to ``task.log_path``."""
    task.run_dir.parent.mkdir(parents=True, exist_ok=True)
    task.log_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=task.run_dir.parent, prefix=".unpack-") as tmp:
        with tarfile.open(fileobj=io.BytesIO(archive_bytes), mode="r:gz") as archive:
            archive.extractall(tmp, filter="data")
        if (Path(tmp) / _LOG_MEMBER).exists():
            os.replace(Path(tmp) / _LOG_MEMBER, task.log_path)
        if (Path(tmp) / _RUN_MEMBER).exists():
            if task.run_dir.exists():  # an unfinished run from before: trained again, as locally
                shutil.rmtree(task.run_dir)
            os.replace(Path(tmp) / _RUN_MEMBER, task.run_dir)


def _check_reachable(address: str) -> None:
    """Fail fast (Ray itself retries for minutes) if nothing listens at ``HOST:PORT``."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except (OSError, ValueError) as error:
        raise UserError(f"cannot connect to the Ray cluster at {address!r}: {error}") from None


def connect_ray(address: str) -> ModuleType:
    """The ``ray`` module, connected to the cluster at ``address`` (``auto``, ``HOST:PORT``, ``ray://...``);
    a :class:`~ctm_rl.errors.UserError` if Ray is not installed or the cluster cannot be reached."""
    try:
        import ray
    except ImportError:
        raise UserError("--ray-address needs Ray: pip install 'ctm-rl[ray]'") from None
    if ":" in address and not ray.is_initialized():
        _check_reachable(address)
    try:
        # An already connected driver (e.g. a notebook's, or a test's local instance) is reused.
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise UserError(f"cannot connect to the Ray cluster at {address!r}: {error}") from None
    return ray


def _run_on_ray(pending: Sequence[RunTask], address: str, log: Callable[[str], None]) -> list[RunResult]:
    ray = connect_ray(address)
    remote = ray.remote(num_cpus=1)(train_packed)
    log(f"training {len(pending)} runs as Ray tasks on the cluster at {address} "
        f"({ray.cluster_resources().get('CPU', 0):g} CPUs)")
    by_ref = {remote.remote(task): task for task in pending}
    results = []
    waiting = list(by_ref)
    try:
        while waiting:
            ready, waiting = ray.wait(waiting, num_returns=1)
            task = by_ref[ready[0]]
            try:
                status, wall, timesteps, archive = ray.get(ready[0])
            except ray.exceptions.RayError as error:  # the task's node or worker died
                log(f"{task.label}: Ray task failed: {str(error).splitlines()[0]}")
                results.append(RunResult(task, "failed"))
            else:
                unpack_run(task, archive)
                results.append(RunResult(task, status, wall, timesteps))
            _report_done(len(results), len(pending), results[-1], log)
    except BaseException:
        for ref in waiting:  # Ctrl-C: queued runs must not go on training on the cluster
            ray.cancel(ref, force=True)
        raise
    return results
