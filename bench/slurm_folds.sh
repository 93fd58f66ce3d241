#!/usr/bin/env bash
# Farm the five folds of bench/slurm-tiny.yaml over a single-node SLURM cluster on this machine
# (tools/slurm_local.sh), two jobs at a time: Make keeps the graph, srun runs each fold's command.
# Usage: bench/slurm_folds.sh     (root, Debian's slurm-wlm and munge installed; see tools/slurm_local.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
tools/slurm_local.sh start >/dev/null
rm -rf runs/ants-bees-slurm
# The queue a few seconds in: two folds running (one core each), the others waiting their turn.
(sleep 15; echo "--- squeue, 15 s in:"; squeue -o "%.6i %.8T %.6C %.40o" | cut -c1-100) &
time make -j 2 train CONFIG=bench/slurm-tiny.yaml LAUNCH="srun -n1 -c1 --quiet --quit-on-interrupt"
wait
echo "--- a second run: nothing is stale, so nothing is submitted"
make -j 2 train CONFIG=bench/slurm-tiny.yaml LAUNCH="srun -n1 -c1 --quiet --quit-on-interrupt"
echo "--- one fold's outputs removed: only that fold goes back to the cluster"
rm runs/ants-bees-slurm/fold3/oof.csv
make -j 2 train CONFIG=bench/slurm-tiny.yaml LAUNCH="srun -n1 -c1 --quiet --quit-on-interrupt" | grep -E "srun|skipping|resum" || true
