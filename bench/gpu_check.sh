#!/usr/bin/env bash
# The GPU checks, on one machine with a CUDA GPU and torch/timm preinstalled (PY=python3), run
# from the project root. Each step has its own time limit so one slow step cannot hide the rest;
# logs go to $OUT (default /tmp/gpu-check).
#
#   1. deterministic: fold 0 of the demo config, shortened, twice with runtime.deterministic=true;
#      best.pt's weights and oof.csv must be bit-identical (and once more without it, for contrast)
#   2. tricks in float16 with loss scaling: EMA, SWA, FGM, R-Drop, mixup and clipping at once
#   3. train.batch_size=auto: the probe, and the batch it picked
#   4. bench/speed.py --only gpu: real cached images against synthetic tensors
#   5. the demo: time make ensemble on configs/ants-bees.yaml, then its hidden-test score
#
# Usage: OUT=/tmp/gpu-check PY=python3 bash bench/gpu_check.sh
set -uo pipefail
OUT=${OUT:-/tmp/gpu-check}
PY=${PY:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
C=configs/ants-bees.yaml
SHORT="train.phases.0.epochs=2 runtime.num_workers=4"
step() { echo "=== $1 ($(date +%T))"; }

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$PY -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__, torch.cuda.get_device_name())"
make --no-print-directory folds PY=$PY CONFIG=$C >/dev/null

step "1 deterministic"
for n in det1 det2 nondet; do
  extra="runtime.deterministic=true"; [ $n = nondet ] && extra=""
  timeout 150 make --no-print-directory train PY=$PY CONFIG=$C FOLD=0 SET="name=gpu-$n $SHORT $extra" \
    >"$OUT/$n.log" 2>&1 || echo "$n failed: $(tail -3 "$OUT/$n.log")"
done
$PY - <<'EOF'
import torch, pandas as pd
def load(n):
    ck = torch.load(f"runs/gpu-{n}/fold0/best.pt", map_location="cpu", weights_only=True)
    return ck["state_dict"], pd.read_csv(f"runs/gpu-{n}/fold0/oof.csv")
(a, oa), (b, ob), (c, oc) = load("det1"), load("det2"), load("nondet")
same = lambda x, y: all(torch.equal(x[k], y[k]) for k in x)
print("deterministic runs: weights identical", same(a, b), "| oof identical", oa.equals(ob))
print("without deterministic: weights identical to det1", same(a, c),
      "| max oof diff", float((oa.iloc[:, -2:] - oc.iloc[:, -2:]).abs().max().max()))
EOF
grep -h "epoch 7\|epoch 1 " "$OUT"/det1.log | tail -2

step "2 tricks under float16"
timeout 150 make --no-print-directory train PY=$PY CONFIG=$C FOLD=0 SET="name=gpu-tricks $SHORT \
  runtime.amp_dtype=float16 train.ema={} train.swa.epochs=2 train.fgm={} train.rdrop=0.5 \
  train.mixup={} train.clip_grad_norm=1.0" >"$OUT/tricks.log" 2>&1; echo "tricks rc=$?"
grep -E "epoch|error" "$OUT/tricks.log" | tail -4

step "3 batch_size auto"
timeout 150 make --no-print-directory train PY=$PY CONFIG=$C FOLD=0 SET="name=gpu-auto $SHORT \
  train.batch_size=auto" >"$OUT/auto.log" 2>&1; echo "auto rc=$?"
grep -E "batch|error" "$OUT/auto.log" | head -4

step "4 speed"
timeout 120 $PY bench/speed.py --only gpu 2>&1 | tail -3

step "5 demo"
start=$(date +%s)
timeout 330 make --no-print-directory ensemble PY=$PY CONFIG=$C >"$OUT/demo.log" 2>&1; echo "demo rc=$?"
echo "demo wall seconds: $(( $(date +%s) - start ))"
grep -E "CV|calibration" "$OUT/demo.log" | tail -3
$PY bench/score.py submissions/ants-bees-lite2.csv 2>&1 | tail -2
step done
