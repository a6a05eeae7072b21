"""Run directories: where one training run keeps its config, logs, checkpoints and models.

Layout::

    RUN_DIR/
      config.yaml                    the resolved config (``agent`` tells which class loads the models)
      tb/                            TensorBoard logs
      checkpoints/model_<N>_steps.zip  periodic and interrupt checkpoints, resumable
      best_model.zip                 best mean return of the periodic evaluations
      final_model.zip                the model when training finished
      evaluations.csv                one row per periodic evaluation

A model ``X.zip`` trained with ``VecNormalize`` has its statistics beside it in ``X_vecnormalize.pkl``.
Every model, statistics and config file is written atomically (a temporary file in the same directory,
then ``os.replace``), statistics before the model, so a model file that exists is complete and has its
statistics: an interrupted write never costs the previous checkpoint.
"""

from __future__ import annotations

import csv
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stable_baselines3.common.base_class import BaseAlgorithm

from ctm_rl.errors import RunDirError

CONFIG_NAME = "config.yaml"
EVALUATION_FIELDS = ("timesteps", "mean_return", "std_return", "mean_length", "success_rate", "episodes",
                     "time_s")
_CHECKPOINT_PATTERN = re.compile(r"^model_(\d+)_steps\.zip$")


def atomic_save(path: Path, save: Callable[[str], Any]) -> None:
    """Call ``save(temporary_path)``, then move the result to ``path`` in one step.

    The temporary file keeps ``path``'s suffix, so savers that append a missing ``.zip`` (SB3) leave it be.
    The result gets the permissions a plainly written new file would have (``mkstemp`` makes its files
    private to the owner, which would hide results from the rest of a shared group).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.",
                                         suffix=f".tmp{path.suffix}")
    os.close(handle)
    try:
        save(temporary)
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (:func:`atomic_save`)."""
    atomic_save(path, lambda temporary: Path(temporary).write_text(text, encoding="utf-8"))


def _umask() -> int:
    """The process's file-creation mask (reading it means setting it, so it is set back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def vecnormalize_path(model_path: Path) -> Path:
    """Where the ``VecNormalize`` statistics of the model ``model_path`` are kept."""
    return model_path.with_name(f"{model_path.stem}_vecnormalize.pkl")


def save_model(model: BaseAlgorithm, path: Path) -> None:
    """Save ``model`` (and its ``VecNormalize`` statistics, if any) atomically to ``path``."""
    normalization = model.get_vec_normalize_env()
    if normalization is not None:
        atomic_save(vecnormalize_path(path), normalization.save)
    atomic_save(path, model.save)


@dataclass(frozen=True)
class RunDir:
    """The files of one run directory (see the module docstring)."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / CONFIG_NAME

    @property
    def tensorboard(self) -> Path:
        return self.root / "tb"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def best_model(self) -> Path:
        return self.root / "best_model.zip"

    @property
    def final_model(self) -> Path:
        return self.root / "final_model.zip"

    @property
    def evaluations(self) -> Path:
        return self.root / "evaluations.csv"

    def checkpoint(self, timesteps: int) -> Path:
        return self.checkpoints / f"model_{timesteps}_steps.zip"

    def latest_checkpoint(self) -> tuple[int, Path] | None:
        """``(timesteps, path)`` of the checkpoint with the most timesteps, if any."""
        found = [(int(m.group(1)), p) for p in self.checkpoints.glob("model_*_steps.zip")
                 if (m := _CHECKPOINT_PATTERN.match(p.name))]
        return max(found) if found else None

    def model_to_play(self) -> Path:
        """The model ``eval`` and ``visualize`` use: the final, else the best, else the latest checkpoint."""
        for path in (self.final_model, self.best_model):
            if path.is_file():
                return path
        latest = self.latest_checkpoint()
        if latest is None:
            raise RunDirError(f"{self.root} holds no model yet (no final, best or checkpoint model)")
        return latest[1]

    # --- creating and opening ----------------------------------------------------------------------------

    @classmethod
    def open(cls, root: str | os.PathLike) -> RunDir:
        """An existing run directory (it must hold ``config.yaml``)."""
        run = cls(Path(root))
        if not run.root.is_dir():
            raise RunDirError(f"run directory not found: {run.root}")
        if not run.config.is_file():
            raise RunDirError(f"{run.root} is not a run directory (it has no {CONFIG_NAME})")
        return run

    @classmethod
    def of_model(cls, model_path: Path) -> RunDir | None:
        """The run directory a model file belongs to (itself or its parent holds ``config.yaml``)."""
        for directory in (model_path.parent, model_path.parent.parent):
            if (directory / CONFIG_NAME).is_file():
                return cls(directory)
        return None

    @classmethod
    def create(cls, root: str | os.PathLike, overwrite: bool = False) -> RunDir:
        """A new, empty run directory.

        An existing one is replaced only with ``overwrite``, and only if it is a run directory (or empty):
        a mistyped ``--run-dir`` must never wipe unrelated files.
        """
        run = cls(Path(root))
        if run.root.exists() and not run.root.is_dir():
            raise RunDirError(f"{run.root} exists and is not a directory")
        if run.root.is_dir() and any(run.root.iterdir()):
            if not overwrite:
                raise RunDirError(f"run directory {run.root} already exists: pass --overwrite to replace it, "
                                  f"or `ctm-rl train --resume {run.root}` to continue it")
            if not run.config.is_file():
                raise RunDirError(f"{run.root} is not empty and not a run directory: "
                                  "refusing to overwrite it")
            shutil.rmtree(run.root)
        run.root.mkdir(parents=True, exist_ok=True)
        return run

    @staticmethod
    def next_free(parent: Path, name: str) -> Path:
        """``parent/name_1``, ``parent/name_2``, ...: the first that does not exist."""
        index = 1
        while (parent / f"{name}_{index}").exists():
            index += 1
        return parent / f"{name}_{index}"

    # --- evaluations -------------------------------------------------------------------------------------

    def append_evaluation(self, row: dict[str, Any]) -> None:
        """Add one row to ``evaluations.csv`` (creating it with a header)."""
        new = not self.evaluations.is_file()
        with self.evaluations.open("a", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=EVALUATION_FIELDS)
            if new:
                writer.writeheader()
            writer.writerow(row)

    def drop_evaluations_after(self, timesteps: int) -> int:
        """Remove the ``evaluations.csv`` rows later than ``timesteps`` (a run resumed from an older checkpoint
        than its last evaluation, after a hard kill, evaluates those steps again); how many were removed."""
        if not self.evaluations.is_file():
            return 0
        with self.evaluations.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        kept = [row for row in rows if int(row["timesteps"]) <= timesteps]
        if len(kept) < len(rows):
            def write(path: str) -> None:
                with open(path, "w", newline="", encoding="utf-8") as handle:
                    writer = csv.DictWriter(handle, fieldnames=EVALUATION_FIELDS)
                    writer.writeheader()
                    writer.writerows(kept)

            atomic_save(self.evaluations, write)
        return len(rows) - len(kept)

    def best_evaluation(self) -> float:
        """The best mean return recorded so far (``-inf`` if none), so a resumed run keeps its best model."""
        if not self.evaluations.is_file():
            return -math.inf
        with self.evaluations.open(newline="", encoding="utf-8") as handle:
            returns = [float(row["mean_return"]) for row in csv.DictReader(handle) if row.get("mean_return")]
        return max(returns, default=-math.inf)
