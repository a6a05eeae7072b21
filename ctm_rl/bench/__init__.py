"""Benchmark harness: train every (agent, env, seed) as its own run, in parallel, and compare them.

* :mod:`ctm_rl.bench.harness`: plan the runs and train them on worker processes (resumable);
* :mod:`ctm_rl.bench.stats`: IQM, bootstrap confidence intervals, sample efficiency (numpy only);
* :mod:`ctm_rl.bench.report`: ``results.csv``, ``summary.md`` and ``curves_<env>.png``;
* :mod:`ctm_rl.bench.command`: the ``ctm-rl benchmark`` sub-command.

See docs/BENCHMARKS.md.
"""
