"""Hyper-parameter search with Optuna: ``ctm-rl tune CONFIG --trials N --budget STEPS``.

* :mod:`ctm_rl.tune.space`: the search space of each agent, and the config's ``tune:`` section narrowing it;
* :mod:`ctm_rl.tune.objective`: a trial's runs, their score (area under the evaluation curve), pruning;
* :mod:`ctm_rl.tune.study`: the Optuna study: storage, resuming, the best trial;
* :mod:`ctm_rl.tune.runner`: trials in this process, on worker processes or on a Ray cluster;
* :mod:`ctm_rl.tune.report`: ``trials.csv``, ``best.yaml`` and the printed summary;
* :mod:`ctm_rl.tune.command`: the ``ctm-rl tune`` sub-command.

See docs/TUNING.md.
"""
