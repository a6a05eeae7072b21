"""benchmarks/paper_runs.py's --stop-after: a run that outlives it is stopped with SIGTERM and counts as done."""

from __future__ import annotations

import sys

import pytest


@pytest.fixture(scope="module")
def paper_runs(load_benchmark):
    return load_benchmark("paper_runs")


# Stands in for `ctm-rl train`: saves nothing, but exits 143 on SIGTERM as it does after its checkpoint.
TRAINER = ("import signal, sys, time\n"
           "signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))\n"
           "print('training', flush=True)\n"
           "time.sleep(30)\n")


def test_stop_after_stops_a_long_run_and_counts_it_as_done(paper_runs):
    assert paper_runs.train_run([sys.executable, "-c", TRAINER], stop_after=1.0) == 0


def test_a_run_that_ends_by_itself_keeps_its_exit_status(paper_runs):
    assert paper_runs.train_run([sys.executable, "-c", "raise SystemExit(3)"], stop_after=30.0) == 3
    assert paper_runs.train_run([sys.executable, "-c", "pass"], stop_after=None) == 0


def test_a_run_that_fails_on_sigterm_is_a_failure(paper_runs):
    ignores = "import time, signal\nsignal.signal(signal.SIGTERM, lambda *_: exit(2))\ntime.sleep(30)\n"
    assert paper_runs.train_run([sys.executable, "-c", ignores], stop_after=1.0) == 2
