"""Launching small distributed jobs in tests: two gloo processes on the CPU, on loopback.

A hung collective must fail within minutes with gloo's own error (which collective, which
rank), not sit until pytest-timeout kills the whole test session:
``VAFA_DIST_TIMEOUT_MIN`` bounds every collective of the library's process groups, and
``torchrun --standalone`` picks its rendezvous port itself (no port chosen here and taken by
someone else before the job binds it).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

#: Minutes any collective of a test job may wait (a tiny job's slowest step takes seconds).
COLLECTIVE_TIMEOUT_MIN = 2


def loopback() -> dict[str, str]:
    """Keep gloo on the loopback interface (Linux)."""
    return {"GLOO_SOCKET_IFNAME": "lo"} if Path("/sys/class/net/lo").exists() else {}


def job_env(**extra: str) -> dict[str, str]:
    """The environment of a test job: one thread per process, loopback, bounded waits,
    no ``WORLD_SIZE`` inherited from the test process."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **loopback()}
    env["VAFA_DIST_TIMEOUT_MIN"] = str(COLLECTIVE_TIMEOUT_MIN)
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    env.update(extra)
    return env


def torchrun(nproc: int, *program: str) -> list[str]:
    """``python -m torch.distributed.run --standalone --nproc_per_node NPROC PROGRAM…``;
    ``--tee 3`` prefixes each worker's lines with ``[default<rank>]:``."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "--tee=3",
        *program,
    ]
