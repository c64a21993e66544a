"""Run every benchmark of ``benchmarks/`` (``make bench``); JSON results go to benchmarks/results/.

Each benchmark measures ratios within one process run (never absolute timings against a
threshold); run on a quiet machine, e.g. ``make bench BENCH_ARGS="--quick"``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = [
    "bench_attack_step.py",
    "bench_tiling.py",
    "bench_widget.py",
    "bench_teaching.py",
    "bench_scrubber.py",
]


def main() -> int:
    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    extra = sys.argv[1:]
    failed = []
    for name in BENCHMARKS:
        script = HERE / name
        if not script.exists():
            continue
        print(f"== {name}", flush=True)
        cmd = [sys.executable, str(script), "--json", str(out_dir / f"{script.stem}.json"), *extra]
        if subprocess.run(cmd, cwd=HERE.parent).returncode != 0:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
