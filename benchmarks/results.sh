#!/usr/bin/env bash
# Reproduces docs/RESULTS.md: CTM against LSTM, MLP and frame-stacking PPO, 5 seeds each, parameter counts
# matched to the CTM's.  Three `ctm-rl benchmark` calls, one per training budget; each is resumable, so
# re-running this script after an interruption trains only the missing runs.
#   usage: bash benchmarks/results.sh [OUT_DIR]   (default runs/results; AGENTS=ctm,lstm overrides the agents)
set -euo pipefail
out="${1:-runs/results}"
agents="${AGENTS:-ctm,lstm,mlp,framestack}"
common=(--agents "$agents" --seeds 5 --workers 2 --match-params ctm --set eval.freq=5000)

ctm-rl benchmark "${common[@]}" --envs CTM/CartPoleNoVel-v1,CTM/AcrobotNoVel-v1 \
    --total-timesteps 50000 --out "$out/classic"
# Grid worlds are evaluated with sampled actions: the argmax of a policy still learning tends to loop
# (turning in place, walking into a wall) until the time limit, which hides what it has learned.
ctm-rl benchmark "${common[@]}" --envs CTM/Memory-L4-v0,CTM/Memory-L16-v0,CTM/Maze-7x7-v0 \
    --set eval.deterministic=false --total-timesteps 30000 --out "$out/grid"
ctm-rl benchmark "${common[@]}" --envs MiniGrid-Empty-Random-6x6-v0 --set eval.deterministic=false \
    --set 'env.wrappers=[minigrid.wrappers.ImgObsWrapper]' --total-timesteps 30000 --out "$out/minigrid"
