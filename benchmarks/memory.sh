#!/usr/bin/env bash
# The memory comparison of docs/RESULTS.md (issue 19): the CTM and the LSTM, each with its tuned config
# (configs/memory.yaml, configs/memory_lstm.yaml), 5 seeds, on the T-maze at corridor lengths 4, 8, 16 and 32,
# at the issue's budgets.  One `ctm-rl benchmark` call per length; each is resumable (finished runs are
# skipped, a stopped run resumes from its checkpoint), so re-running this script continues where it stopped.
# Then memory_report.py copies each finished run's evaluations to docs/results/memory (commit them) and
# writes the summary, the success curves and the memory-horizon plot from everything copied so far.
# Memory-L4 is left out by default: its 5 seeds per agent were trained by the 5-seed check of the tuned
# settings (docs/MEMORY.md), whose evaluations are already in docs/results/memory; LENGTHS="4 8 16 32" trains
# them again from the committed configs.
#   usage: bash benchmarks/memory.sh [OUT_DIR]     (default runs/memory; LENGTHS="8" for some lengths only)
set -euo pipefail
out="${1:-runs/memory}"
lengths="${LENGTHS:-8 16 32}"
declare -A budget=([4]=250000 [8]=1000000 [16]=2000000 [32]=2000000)
declare -A freq=([4]=25000 [8]=50000 [16]=100000 [32]=100000)
for length in $lengths; do
    ctm-rl benchmark --agents ctm,lstm --config ctm=configs/memory.yaml --config lstm=configs/memory_lstm.yaml \
        --envs "CTM/Memory-L${length}-v0" --seeds 5 --workers 2 --total-timesteps "${budget[$length]}" \
        --set eval.freq="${freq[$length]}" --set checkpoint_freq=100000 --out "$out/L${length}" || true
    python benchmarks/memory_report.py "$out/L${length}" --out docs/results/memory
done
