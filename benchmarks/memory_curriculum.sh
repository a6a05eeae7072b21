#!/usr/bin/env bash
# The T-maze curriculum of docs/MEMORY.md (issue 19): each agent, with its tuned config unchanged, trained on
# Memory-L16 starting from the weights of its own Memory-L8 run of benchmarks/memory.sh (the same seed;
# config key init_from), for 1M steps, so that L8 and L16 together take the 2M-step L16 budget;
# then on Memory-L32 from that L16 run, 1M steps more (3M in all: the issue sets no L32 budget).
# Why: a fresh agent almost never reaches an arm of Memory-L16 (benchmarks/memory_exploration.py), so it
# gets no reward to learn from; an L8 policy walks to the junction from its first step.
# Resumable like memory.sh: finished runs are skipped, stopped ones resume from their checkpoints.  Run it
# after memory.sh has trained L8 (a seed whose L8 run is missing fails with a one-line error in its log).
#   usage: bash benchmarks/memory_curriculum.sh [MEMORY_DIR] [OUT_DIR]   (defaults runs/memory, runs/memory_curriculum)
set -euo pipefail
memory="${1:-runs/memory}"
out="${2:-runs/memory_curriculum}"
ctm-rl benchmark --agents ctm,lstm --config ctm=configs/memory.yaml --config lstm=configs/memory_lstm.yaml \
    --envs CTM/Memory-L16-v0 --seeds 5 --workers 2 --total-timesteps 1000000 \
    --set eval.freq=50000 --set checkpoint_freq=100000 \
    --set "init_from=$memory/L8/runs/CTM-Memory-L8-v0/{agent}/seed_{seed}" --out "$out/L16" || true
python benchmarks/memory_report.py "$out/L16" --prior-steps 1000000 --label from_L8 --out docs/results/memory
ctm-rl benchmark --agents ctm,lstm --config ctm=configs/memory.yaml --config lstm=configs/memory_lstm.yaml \
    --envs CTM/Memory-L32-v0 --seeds 5 --workers 2 --total-timesteps 1000000 \
    --set eval.freq=50000 --set checkpoint_freq=100000 \
    --set "init_from=$out/L16/runs/CTM-Memory-L16-v0/{agent}/seed_{seed}" --out "$out/L32" || true
python benchmarks/memory_report.py "$out/L32" --prior-steps 2000000 --label from_L16 --out docs/results/memory
