#!/usr/bin/env bash
# GPU readiness check, in one go (issue 16): the CUDA test subset, the step-ratio benchmark and
# a UNETR 96³ VAFA step timing on the GPU, then a summary.
#   bash benchmarks/gpu_check.sh [OUT_DIR]        (default benchmarks/results/gpu)
# Uses .venv/bin/python when it exists (else python3). Exits 2 when torch sees no CUDA GPU,
# 1 when a part failed, 0 otherwise.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
OUT=${1:-benchmarks/results/gpu}
mkdir -p "$OUT"

if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  "$PY" -c "import torch; print(f'gpu_check: no CUDA GPU visible to torch {torch.__version__} (built for CUDA {torch.version.cuda}); nothing was run')" >&2
  exit 2
fi
"$PY" -c "import torch; p = torch.cuda.get_device_properties(0); print(f'GPU: {p.name}, {p.total_memory / 2**30:.0f} GiB, torch {torch.__version__}, CUDA {torch.version.cuda}')" | tee "$OUT/device.txt"

status=0
echo "== 1/3 CUDA tests (pytest -m cuda)"
"$PY" -m pytest tests/library -m cuda -q -p no:cacheprovider 2>&1 | tee "$OUT/cuda_tests.txt" | tail -15
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

echo "== 2/3 step-ratio benchmark (CPU side, benchmarks/bench_attack_step.py --quick)"
"$PY" benchmarks/bench_attack_step.py --quick --threads "${THREADS:-8}" \
  --json "$OUT/bench_attack_step.json" 2>&1 | tee "$OUT/bench_attack_step.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

echo "== 3/3 VAFA step on the GPU (UNETR and UNet, 96³, amp off/bf16/fp16)"
"$PY" benchmarks/bench_gpu_step.py --json "$OUT/bench_gpu_step.json" 2>&1 | tee "$OUT/bench_gpu_step.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

echo
echo "== summary"
cat "$OUT/device.txt"
echo "cuda tests: $(grep -E '(passed|failed|error)' "$OUT/cuda_tests.txt" | tail -1)"
"$PY" - "$OUT" <<'PYEOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
try:
    cpu = json.loads((out / "bench_attack_step.json").read_text())
    print(f"CPU step ratio ({cpu['threads']} threads, {cpu['size']}³): "
          f"32³ blocks {cpu['ratio_b32']:.2f}, 8³ blocks {cpu['ratio_b8']:.2f}")
except (OSError, KeyError, ValueError) as err:
    print(f"CPU step ratio: not measured ({err})")
try:
    gpu = json.loads((out / "bench_gpu_step.json").read_text())
    print(f"GPU ({gpu['device']}, {gpu['size']}³, {gpu['block']}³ blocks):")
    for key, row in gpu["runs"].items():
        print(f"  {key:12s} bare {row['bare_fwd_bwd_ms']:7.1f} ms  VAFA step "
              f"{row['vafa_step_ms']:7.1f} ms  ratio {row['ratio']:.2f}  "
              f"peak {row.get('peak_gpu_mb', float('nan')):.0f} MB")
except (OSError, KeyError, ValueError) as err:
    print(f"GPU step: not measured ({err})")
PYEOF
exit $status
