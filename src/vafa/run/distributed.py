"""Work shared out over ``torchrun`` processes: this process's place in the job (:class:`Dist`),
which work items it owns, and the few collectives used.

Under ``torchrun --nproc_per_node N [--nnodes M …] -m vafa COMMAND …`` every process runs the
same command. :meth:`Dist.setup` joins (or creates) the process group when ``WORLD_SIZE > 1``:
nccl on CUDA, each process on ``cuda:LOCAL_RANK``; gloo on the CPU. Without ``torchrun`` it
is a one-process "job" (rank 0 of 1) and nothing is initialised.

Sharding is by index: work item ``i`` (a case, a model × case × entry) belongs to rank
``i mod world_size`` (:meth:`Dist.owns`), whatever is already done. Every rank decides the
same way from the same list, with no message, and a restarted job with the same world size
gives every item to the same rank (each rank finds its own finished work).

Used by VAFT training (DistributedDataParallel, :mod:`vafa.training`), ``vafa attack`` over a
datalist and ``vafa report`` (:mod:`vafa.report.shards`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, TypeVar

import torch

from vafa.ops.devices import resolve_device

__all__ = ["EVALUATION_TIMEOUT", "Dist", "world_size_requested"]

T = TypeVar("T")

#: How long a collective waits for the slowest process in attack and report jobs. Ranks that
#: finish their shard early wait at the final barrier while others still attack (hours on a
#: large dataset); torchrun ends the whole job as soon as one process fails, so a long wait
#: never hangs a broken job. ``VAFA_DIST_TIMEOUT_MIN`` overrides it (minutes), here and for
#: training (whose groups otherwise keep torch's default).
EVALUATION_TIMEOUT = timedelta(hours=24)


def world_size_requested() -> int:
    """``WORLD_SIZE`` of the environment (1 without torchrun)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1") or 1))
    except ValueError:
        raise ValueError(
            f"WORLD_SIZE must be an integer, got {os.environ['WORLD_SIZE']!r}"
        ) from None


class Dist:
    """This process's place in a (possibly) distributed job, and the collectives used.

    Attributes:
        rank, world_size: the process's global rank and the number of processes.
        device: where this process computes (``cuda:LOCAL_RANK`` under nccl).
        owns_group: this object created the process group (:meth:`close` destroys it).
        comm_device: where collective buffers live (the GPU under nccl, else the CPU).
    """

    def __init__(self, rank: int, world_size: int, device: torch.device, owns: bool) -> None:
        self.rank, self.world_size, self.device = rank, world_size, device
        self.owns_group = owns
        self.comm_device = (
            device if world_size > 1 and _backend() == "nccl" else torch.device("cpu")
        )

    @property
    def is_writer(self) -> bool:
        """Rank 0 writes the files shared by the whole job."""
        return self.rank == 0

    @classmethod
    def setup(cls, device: str | torch.device, *, timeout: timedelta | None = None) -> Dist:
        """Join the process group that exists, or create one when ``WORLD_SIZE > 1``.

        Args:
            device: the device asked for (``"auto"``, ``"cpu"``, ``"cuda"``…); under nccl
                every process takes ``cuda:LOCAL_RANK`` instead.
            timeout: of the collectives when the group is created here (None: torch's
                default; attack and report jobs pass :data:`EVALUATION_TIMEOUT`). The
                environment variable ``VAFA_DIST_TIMEOUT_MIN`` (minutes) overrides it.

        Raises:
            ValueError: the device does not exist here.
            RuntimeError: ``WORLD_SIZE > 1`` but torch.distributed is not available.
        """
        import torch.distributed as dist

        initialised = dist.is_available() and dist.is_initialized()
        if not initialised and world_size_requested() <= 1:
            return cls(0, 1, resolve_device(device), owns=False)
        if not dist.is_available():
            raise RuntimeError("WORLD_SIZE > 1 but torch.distributed is not available here")
        dev = resolve_device(device)
        owns = False
        if not initialised:
            wait = _timeout(timeout)
            kwargs = {} if wait is None else {"timeout": wait}
            dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo", **kwargs)
            owns = True
        if dev.type == "cuda" or _backend() == "nccl":
            local = int(os.environ.get("LOCAL_RANK", dist.get_rank() % torch.cuda.device_count()))
            dev = torch.device("cuda", local)
            torch.cuda.set_device(dev)
        return cls(dist.get_rank(), dist.get_world_size(), dev, owns)

    # ------------------------------------------------------------------ sharding
    def owns(self, index: int) -> bool:
        """Whether work item ``index`` (0-based) is this process's: ``index mod world_size``."""
        return index % self.world_size == self.rank

    def shard(self, items: Sequence[T]) -> list[tuple[int, T]]:
        """``(index, item)`` of the items this process owns, in order."""
        return [(i, item) for i, item in enumerate(items) if self.owns(i)]

    # ------------------------------------------------------------------ collectives
    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """Element-wise sum over the processes (a CPU tensor)."""
        if self.world_size == 1:
            return values
        import torch.distributed as dist

        buffer = values.to(self.comm_device)
        dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
        return buffer.cpu()

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        summed = self.sum(torch.tensor(list(values.values()), dtype=torch.float64))
        return {k: float(v) / self.world_size for k, v in zip(values, summed, strict=True)}

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` is set in any process (also a synchronisation point)."""
        return bool(self.sum(torch.tensor([float(flag)])).item() > 0)

    def gather_json(self, value: Any) -> list[Any]:
        """Every process's ``value`` (JSON-serialisable), in rank order, on every process.

        Sent as UTF-8 JSON bytes (nothing is pickled).
        """
        if self.world_size == 1:
            return [value]
        import torch.distributed as dist

        data = json.dumps(value, allow_nan=False).encode("utf-8")
        size = torch.tensor([len(data)], dtype=torch.int64, device=self.comm_device)
        sizes = [torch.zeros_like(size) for _ in range(self.world_size)]
        dist.all_gather(sizes, size)
        longest = max(int(s.item()) for s in sizes)
        buffer = torch.zeros(longest, dtype=torch.uint8, device=self.comm_device)
        if data:
            buffer[: len(data)] = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        buffers = [torch.zeros_like(buffer) for _ in range(self.world_size)]
        dist.all_gather(buffers, buffer)
        return [
            json.loads(bytes(b[: int(s.item())].cpu().tolist()).decode("utf-8"))
            for b, s in zip(buffers, sizes, strict=True)
        ]

    def barrier(self) -> None:
        """Wait for every process."""
        if self.world_size > 1:
            import torch.distributed as dist

            if self.comm_device.type == "cuda":
                dist.barrier(device_ids=[self.comm_device.index])
            else:
                dist.barrier()

    def close(self) -> None:
        """Destroy the process group if :meth:`setup` created it."""
        if self.owns_group:
            import torch.distributed as dist

            dist.destroy_process_group()
            self.owns_group = False


def _timeout(default: timedelta | None) -> timedelta | None:
    """``VAFA_DIST_TIMEOUT_MIN`` (minutes) if set, else ``default``."""
    text = os.environ.get("VAFA_DIST_TIMEOUT_MIN")
    if not text:
        return default
    try:
        minutes = float(text)
    except ValueError:
        minutes = -1.0
    if not minutes > 0:
        raise ValueError(f"VAFA_DIST_TIMEOUT_MIN must be a positive number, got {text!r}")
    return timedelta(minutes=minutes)


def _backend() -> str | None:
    import torch.distributed as dist

    return dist.get_backend() if dist.is_available() and dist.is_initialized() else None
