"""Mixed precision for the model passes of attacks and evaluation (``--amp``).

:func:`with_amp` wraps a network so that its forward runs under :func:`torch.autocast` and its
logits come back as float32: everything around the model — block DCTs, quantization, SSIM,
losses, metrics — keeps computing in float32. The wrapper shares the network's parameters
(``.to``, ``.eval``, ``requires_grad_`` and ``parameters()`` reach the network itself).

Modes (:data:`AMP_MODES`):

- ``"off"``: no wrapper (the default);
- ``"bf16"``: bfloat16 autocast (float32's exponent range: no gradient scaling needed; CUDA
  with compute capability ≥ 8 and CPUs);
- ``"fp16"``: float16 autocast. Dice-CE gradients per voxel are tiny (about 1/voxels, ~1e-7
  for a 96³ tile: below float16's smallest normal number), so the gradient that flows back
  into the network is multiplied by :data:`FP16_GRAD_SCALE` and divided again, in float32,
  at the input (a fixed loss scale; the attack's sign steps only need its direction).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["AMP_MODES", "FP16_GRAD_SCALE", "AutocastModel", "amp_dtype", "with_amp"]

AMP_MODES = ("off", "bf16", "fp16")
#: Fixed scale of the float16 backward pass (:func:`with_amp`; torch's GradScaler starts here).
FP16_GRAD_SCALE = 2.0**16
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def amp_dtype(amp: str) -> torch.dtype | None:
    """``"bf16"`` → ``torch.bfloat16``, ``"fp16"`` → ``torch.float16``, ``"off"`` → None.

    Raises:
        ValueError: another value (the choices are named).
    """
    if amp == "off" or amp is None:
        return None
    if amp not in _DTYPES:
        raise ValueError(f"amp must be one of {list(AMP_MODES)}, got {amp!r}")
    return _DTYPES[amp]


class AutocastModel(nn.Module):
    """``model`` whose forward runs under autocast in ``dtype``; returns float32 logits.

    Args:
        model: maps ``[B, C, H, W, D]`` to logits ``[B, K, H, W, D]`` (or a list/tuple of
            them, e.g. deep supervision).
        dtype: ``torch.bfloat16`` or ``torch.float16``.

    The autocast device type is the input's (``cuda``, ``cpu``, ``mps``).
    """

    def __init__(self, model: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.model = model
        self.dtype = dtype

    def forward(self, x: torch.Tensor):
        if (
            self.dtype == torch.bfloat16
            and x.device.type == "cuda"
            and not torch.cuda.is_bf16_supported()
        ):
            raise ValueError(
                "amp='bf16' needs a GPU with bfloat16 (compute capability 8 or newer); "
                "use amp='fp16' or 'off'"
            )
        scale = FP16_GRAD_SCALE if self.dtype == torch.float16 else None
        if scale is not None:
            x = _ScaleGrad.apply(x, 1.0 / scale)
        with torch.autocast(device_type=x.device.type, dtype=self.dtype):
            out = self.model(x)
        if isinstance(out, (list, tuple)):
            return type(out)(_to_float(o, scale) for o in out)
        return _to_float(out, scale)

    def extra_repr(self) -> str:
        return f"dtype={self.dtype}"


def with_amp(model: nn.Module, amp: str = "off") -> nn.Module:
    """``model`` itself for ``amp="off"``, else an :class:`AutocastModel` around it.

    A model already wrapped is not wrapped twice (``"off"`` keeps its wrapper; another mode
    replaces its dtype).

    Raises:
        ValueError: ``amp`` is not one of :data:`AMP_MODES`.
    """
    dtype = amp_dtype(amp)
    if dtype is None:
        return model
    inner = model.model if isinstance(model, AutocastModel) else model
    return AutocastModel(inner, dtype)


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; multiplies the gradient by ``factor`` on the way back."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, factor: float) -> torch.Tensor:
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        out = grad * ctx.factor
        if ctx.factor < 1.0 and not bool(torch.isfinite(out).all()):
            raise ValueError(
                "the float16 backward pass overflowed (inf/NaN gradient): use amp='bf16' or 'off'"
            )
        return out, None


def _to_float(value, scale: float | None):
    if not isinstance(value, torch.Tensor) or not value.is_floating_point():
        return value
    value = value.float()
    return value if scale is None else _ScaleGrad.apply(value, scale)
