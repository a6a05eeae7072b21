"""Shared test settings."""

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
import torch

# The tests use tiny models whose ops are too small to gain from threads; one thread also keeps
# timings stable when several test processes share the 2 cores.
torch.set_num_threads(1)


BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(scope="session")
def load_benchmark():
    """Import a script of benchmarks/ (not a package) by its name, e.g. ``load_benchmark("paper_runs")``."""
    def load(name: str) -> ModuleType:
        spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    return load
