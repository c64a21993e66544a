#!/usr/bin/env bash
# Matched-compute VAFT evidence (issue: faithful iterate + VAFT evidence): fine-tune the bundled
# demo model on the bundled CT in modes clean, vafa-fr, vafa and pgd with identical data, patch
# size, batch, number of updates, schedule and seed, then evaluate every model and the untouched
# demo model with the same tiles (scripts/vaft_evaluate.py). Prints each stage's wall time.
#
# Usage: scripts/vaft_evidence.sh [OUT_ROOT]          (default runs/vaft-matched)
#   UPDATES=1000 STEPS=5 ROI=64 LR=5e-4 VAFA="python -m vafa" scripts/vaft_evidence.sh
#   MODES="vafa-fr" ATTACK_ARGS="--q-step 3" scripts/vaft_evidence.sh runs/x   (one variant)
#   TRAIN_ARGS="--lambda-fr 5" (extra train options), OMP_NUM_THREADS=1 EVAL_THREADS=1 (one core)
# CPU, 2 threads (measured 2026-11-30): 1.3–1.6 s per vafa-fr/vafa/pgd update at 64³; the whole
# script took 2 h 21 min (runs and evaluation; part of it shared the cores with other jobs).
# Then: scripts/ship_robust_model.py (robust-demo + its card) and the README tables.
set -euo pipefail
OUT=${1:-runs/vaft-matched}
UPDATES=${UPDATES:-1000}     # updates per run (epochs × iterations per epoch)
EPOCHS=${EPOCHS:-4}          # = number of validations
STEPS=${STEPS:-5}            # attack steps while training (VAFA and PGD)
ROI=${ROI:-64}
LR=${LR:-5e-4}
VAFA=${VAFA:-.venv/bin/vafa}
PY=${PY:-.venv/bin/python}
start=$(date +%s)
mkdir -p "$OUT"
: > "$OUT/times.log"
COMMON=(--model demo --epochs "$EPOCHS" --iterations-per-epoch $((UPDATES / EPOCHS))
        --val-every 1 --batch-size 2 --roi "$ROI" --lr "$LR" --seed 0 --quiet --overwrite
        ${TRAIN_ARGS:-})
for mode in ${MODES:-clean vafa-fr vafa pgd}; do
  echo "== train $mode $(date +%T)"
  # The training attack returns its last iterate (the published VAFA/PGD sample).
  attack=(--steps "$STEPS" --keep last ${ATTACK_ARGS:-})
  [ "$mode" = clean ] && attack=()
  /usr/bin/time -a -o "$OUT/times.log" -f "$mode: %e s wall, %M KiB peak RSS" \
    $VAFA train "${COMMON[@]}" "${attack[@]}" --mode "$mode" --out-dir "$OUT/$mode"
done
echo "== evaluate $(date +%T)"
$PY scripts/vaft_evaluate.py --runs "$OUT" --out "$OUT/matched.json" \
  --time-log "$OUT/times.log" --figure "$OUT/vaft_matched.png" --threads "${EVAL_THREADS:-2}"
echo "== done: $(( $(date +%s) - start )) s wall in all"
