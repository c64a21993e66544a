#!/usr/bin/env bash
# Fine-tune the bundled demo model on the bundled CT in each VAFT mode (the evidence of the
# VAFT issue, Table 6 of the paper). CPU, 2 threads: about 6 minutes per adversarial mode on a
# quiet machine (15–18 minutes measured while other jobs shared the cores), 3× for vafa-fr-long.
# Usage: scripts/vaft_evidence.sh [OUT_ROOT]   (default runs/vaft-evidence)
# Then: python scripts/vaft_table6.py (Table 6) and scripts/ship_robust_model.py (robust-demo).
set -euo pipefail
OUT=${1:-runs/vaft-evidence}
VAFA=${VAFA:-.venv/bin/vafa}
COMMON=(--model demo --epochs 5 --iterations-per-epoch 5 --val-every 5 --batch-size 2
        --roi 96 --lr 1e-4 --seed 0 --quiet --overwrite)
for mode in clean vafa-fr vafa pgd; do
  echo "== $mode $(date +%T)"
  attack=(--steps 10)  # attack steps while training (validation attacks use the same)
  [ "$mode" = clean ] && attack=()
  /usr/bin/time -f "$mode: %e s wall, %M KiB peak" \
    "$VAFA" train "${COMMON[@]}" "${attack[@]}" --mode "$mode" --out-dir "$OUT/$mode"
done
# the shipped robust-demo model: vafa-fr for 3× as long (75 updates; later flags win)
echo "== vafa-fr-long $(date +%T)"
/usr/bin/time -f "vafa-fr-long: %e s wall, %M KiB peak" \
  "$VAFA" train "${COMMON[@]}" --epochs 15 --val-every 15 --steps 10 \
  --mode vafa-fr --out-dir "$OUT/vafa-fr-long"
echo "== done $(date +%T)"
