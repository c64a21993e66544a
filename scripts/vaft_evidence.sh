#!/usr/bin/env bash
# Fine-tune the bundled demo model on the bundled CT in each VAFT mode (the evidence of the
# VAFT issue, Table 6 of the paper). CPU, 2 threads: about 6 minutes per adversarial mode.
# Usage: scripts/vaft_evidence.sh [OUT_ROOT]   (default runs/vaft-evidence)
# Then: vafa report --model demo --model OUT_ROOT/vafa-fr/best.safetensors ... (see README).
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
echo "== done $(date +%T)"
