"""VAFA: the Volumetric Adversarial Frequency Attack (Hanif et al., MICCAI 2023).

The Frequency Perturbation Module (FPM) scales the volume to [0, 255], cuts it into blocks,
takes the orthonormal DCT of every (centred) block, quantizes the coefficients with a learnable
table ``q`` (one entry per block and frequency) through a differentiable rounding, inverts the
DCT and maps the result back to [0, 1]. The attack maximises ``L_seg(M(X'), Y) − w·(1 − SSIM)``
over ``q`` by signed steps, clipped to ``[q_min, q_max]``. With ``bands`` other than ``"all"``
only the coefficients of that DCT band (:mod:`vafa.ops.bands`) are quantized.

The loop is the published one: step ``i`` (0-based) builds the volume from the current table with
the soft rounding at ``α_i = 0.1 − i·0.1/steps``, runs the model, then updates the table. The
volume of the last step (table after ``steps − 1`` updates, ``α = 0.1/steps``) is what the
published code returns, so the last update is never made. ``keep="last"`` returns exactly that
volume; ``keep="best"`` the evaluated step with the highest objective. ``hard_round=True`` then
re-makes the returned volume from the kept table with hard rounding (``α = 0``, a real
quantization; the history marks it ``"hard"``).

Implementation notes: the DCT of the clean volume and the SSIM statistics of the clean blocks
are computed once per call; each step costs one inverse block DCT, the quantization, a three-map
SSIM and the model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from vafa.attacks.base import Attack, AttackResult
from vafa.attacks.options import (
    BANDS_OPTION,
    BLOCK_SIZES,
    KEEP,
    STEPS,
    Option,
    block_size,
    with_default,
)
from vafa.ops.bands import band_layout
from vafa.ops.frequency import (
    layout_dct,
    layout_idct,
    normalize_block_size,
    pad_to_blocks,
    to_blocks,
)
from vafa.ops.quantization import ROUNDINGS, AlphaSchedule, quantize, validate_bounds
from vafa.ops.ssim import BlockSSIM

__all__ = ["BLOCK_SIZE", "NORMALIZE_MODES", "PAPER_SETTINGS", "Q_INIT_MODES", "VAFA", "VAFA2D"]

NORMALIZE_MODES = ("clip", "slice")
Q_INIT_MODES = ("max", "min", "random")
_SLICE_EPS = 1e-8

#: What ``paper=True`` fixes: the published code's algorithm (per-slice min–max, the volume of
#: the last step, the table starting at q_max and moved by signed unit steps in [q_min, q_max],
#: soft tanh rounding, the SSIM term with weight 1; the SSIM term is on in 3D and off in 2D, as
#: published). q_min, q_max, steps and block size stay free (the paper varies them).
PAPER_SETTINGS = {
    "normalize": "slice",
    "keep": "last",
    "q_init": "max",
    "q_step": 1.0,
    "rounding": "tanh",
    "ssim_weight": 1.0,
    "hard_round": False,
}

_Q_UNIT = "in [0, 255] units"
#: The side of the DCT blocks (shared with the other block-DCT attacks, e.g. SA²).
BLOCK_SIZE = Option(
    "block_size", block_size, 32,
    "side of the DCT blocks: 32 or 32,32,32 (larger: stronger; padded when the volume is "
    "not a multiple)", label="block size", widget="combo", gui=BLOCK_SIZES, training=True,
)  # fmt: skip
#: The options of :class:`VAFA` (see :mod:`vafa.attacks.options`).
VAFA_OPTIONS = (
    STEPS,
    Option(
        "q_min", float, 5.0, "lower bound of the quantization steps", unit=_Q_UNIT,
        positive=True, widget="range", group="q_range", gui=(1, 100, 1),
        label="q_min – q_max", training=True,
    ),
    Option(
        "q_max", float, 20.0,
        "upper bound of the quantization steps: larger removes more frequency content, a "
        "stronger and more visible attack", unit=_Q_UNIT,
        positive=True, widget="range", group="q_range", gui=(1, 100, 1),
        label="q_min – q_max", training=True,
    ),
    Option("q_init", str, "max", "start of the table: max | min | random", choices=Q_INIT_MODES),
    Option("q_step", float, 1.0, "table change per step", positive=True),
    BLOCK_SIZE,
    BANDS_OPTION,
    Option(
        "use_ssim_loss", bool, True,
        "subtract ssim_weight × (1 − blockwise SSIM) from the objective",
        label="SSIM loss", flags=("--ssim", "--no-ssim"), widget="check",
    ),
    Option(
        "ssim_weight", float, 1.0, "weight of the SSIM term", label="SSIM weight", minimum=0.0,
        widget="spin", gui=(0.0, 100.0, 0.1),
    ),
    Option(
        "normalize", str, "clip",
        "how the reconstruction returns to [0, 1]: clip (divide by 255 and clamp) or slice "
        "(min–max of every axial slice, as the published code: itself a contrast change)",
        choices=NORMALIZE_MODES, widget="combo",
    ),
    Option("rounding", str, "tanh", "differentiable rounding: tanh (published) | cubic",
           choices=ROUNDINGS),
    KEEP,
    Option(
        "hard_round", bool, False,
        "return the kept table hard-rounded (a real quantization) instead of the soft-rounded "
        "volume the attack evaluated: usually stronger and more visible",
        label="hard rounding", flags=("--hard-round",), widget="check",
    ),
    Option(
        "paper", bool, False,
        "the published algorithm: per-slice min–max, the last step's volume, q from q_max in "
        "signed unit steps within [q_min, q_max], SSIM term (3D) of weight 1",
        label="published algorithm", flags=("--paper",), widget="check",
    ),
)  # fmt: skip


class VAFA(Attack):
    """Volumetric Adversarial Frequency Attack on 3D blocks.

    Args:
        model: segmentation network (logits ``[B, K, H, W, D]``).
        steps: optimisation steps (paper: 20).
        q_min, q_max: bounds of the quantization table (``0 < q_min <= q_max``); published code:
            5 and 20 (Synapse) or 10 (ACDC). Bigger ``q_max`` = stronger, more visible attack.
        q_init: start of the table: ``"max"`` (published code), ``"min"`` (paper's Algorithm 1
            with ``q_min=1``) or ``"random"`` (uniform in the bounds, from ``seed``).
        q_step: size of each signed update, in quantization units (1).
        block_size: ``(h, w, d)`` cube (int = cube); paper's experiments 32³, code default 8³.
        bands: quantize only the coefficients of one DCT band of every block
            (:mod:`vafa.ops.bands`: thirds of the normalised index within the block):
            - ``"all"``: every coefficient (default, the published attack);
            - ``"low"``: ``r < 1/3`` (with the DC term); ``"middle"``: ``1/3 <= r < 2/3``;
            - ``"high"``: ``r >= 2/3``.
            The other coefficients pass through unchanged (up to the return to [0, 1]); their
            entries of ``q_tables`` are 0 ("not quantized").
        use_ssim_loss: subtract ``ssim_weight·(1 − SSIM)`` of every block from the objective.
        ssim_weight: weight of the SSIM term.
        normalize: how the reconstruction returns to [0, 1]:
            - ``"clip"``: divide by 255 and clamp (default; a pure frequency perturbation).
            - ``"slice"``: min–max of every axial (H, W) slice, as the published code (with an
              epsilon guard); adds a contrast change wherever a slice does not span [0, 1].
        rounding: ``"tanh"`` (published, annealed α from 0.1 towards 0) or ``"cubic"``.
        keep: ``"best"`` (default: the step with the highest objective among the ``steps``
            evaluated ones) or ``"last"`` (the volume of the last step, as the published code).
        hard_round: re-make the returned volume from the kept table with hard rounding
            (``α = 0``): a real quantization, usually a stronger and more visible change than
            the soft-rounded iterate the published code returns.
        paper: the published algorithm (:data:`PAPER_SETTINGS`): ``normalize`` and ``keep``
            default to ``"slice"`` and ``"last"``; a conflicting value of a fixed option is an
            error.
        targeted, seed, device, clamp_inputs: see :class:`~vafa.attacks.base.Attack`.

    ``attack(images [B, C, H, W, D] in [0, 1], labels [B, 1, H, W, D] | None)`` returns an
    :class:`~vafa.attacks.base.AttackResult` whose ``q_tables`` is ``[B, C, N, h, w, d]``.
    Sides that are not multiples of the block size are padded (replicate) and cropped back; the
    SSIM term is computed on the padded blocks.
    """

    name = "VAFA"
    label = "VAFA-3D"
    options = VAFA_OPTIONS
    spatial_dims = 3
    evaluates_final = False

    def __init__(
        self,
        model: nn.Module,
        *,
        steps: int = 20,
        q_min: float = 5.0,
        q_max: float = 20.0,
        q_init: str = "max",
        q_step: float = 1.0,
        block_size: int | Sequence[int] = (32, 32, 32),
        bands: str = "all",
        use_ssim_loss: bool = True,
        ssim_weight: float = 1.0,
        normalize: str | None = None,
        rounding: str = "tanh",
        keep: str | None = None,
        hard_round: bool = False,
        paper: bool = False,
        targeted: bool = False,
        seed: int | None = None,
        device: str | torch.device = "auto",
        clamp_inputs: bool = False,
    ) -> None:
        checked = self.check_options(
            steps=steps, q_min=q_min, q_max=q_max, q_init=q_init, q_step=q_step, bands=bands,
            use_ssim_loss=use_ssim_loss, ssim_weight=ssim_weight, normalize=normalize,
            rounding=rounding, keep=keep, hard_round=hard_round, paper=paper,
        )  # fmt: skip
        self.paper = paper
        if self.paper:
            normalize = PAPER_SETTINGS["normalize"] if normalize is None else normalize
            keep = PAPER_SETTINGS["keep"] if keep is None else keep
            given = dict(
                normalize=normalize,
                keep=keep,
                q_init=q_init,
                q_step=q_step,
                rounding=rounding,
                ssim_weight=ssim_weight,
                hard_round=hard_round,
            )
            fixed = self.published_settings()
            given["use_ssim_loss"] = use_ssim_loss
            for key, value in given.items():
                if value != fixed[key]:
                    raise ValueError(f"paper=True fixes {key}={fixed[key]!r}, got {key}={value!r}")
        normalize = "clip" if normalize is None else normalize
        keep = "best" if keep is None else keep
        super().__init__(
            model,
            steps=steps,
            keep=keep,
            targeted=targeted,
            seed=seed,
            device=device,
            clamp_inputs=clamp_inputs,
        )
        validate_bounds(checked["q_min"], checked["q_max"])
        sizes = normalize_block_size(block_size, self.spatial_dims)
        if len(sizes) != self.spatial_dims:
            raise ValueError(
                f"block_size must have {self.spatial_dims} entries for {self.name}, got {block_size!r}"
            )
        self.q_min, self.q_max = checked["q_min"], checked["q_max"]
        self.q_init = q_init
        self.q_step = checked["q_step"]
        self.block_size = sizes
        self.bands = checked["bands"]
        self.use_ssim_loss = use_ssim_loss
        self.ssim_weight = checked["ssim_weight"]
        self.normalize = normalize
        self.rounding = rounding
        self.hard_round = bool(hard_round)

    def _hyper_parameters(self) -> dict[str, Any]:
        return {
            "q_min": self.q_min,
            "q_max": self.q_max,
            "q_init": self.q_init,
            "q_step": self.q_step,
            "block_size": list(self.block_size),
            "bands": self.bands,
            "use_ssim_loss": self.use_ssim_loss,
            "ssim_weight": self.ssim_weight,
            "normalize": self.normalize,
            "rounding": self.rounding,
            "hard_round": self.hard_round,
            "paper": self.paper,
        }

    @classmethod
    def published_settings(cls) -> dict[str, Any]:
        """The values ``paper=True`` fixes for this attack (:data:`PAPER_SETTINGS` and the SSIM
        term: on in 3D, off in 2D, as published)."""
        return {**PAPER_SETTINGS, "use_ssim_loss": cls.spatial_dims == 3}

    # ------------------------------------------------------------------ hooks
    def _init(self, x: torch.Tensor, generator: torch.Generator) -> dict[str, Any]:
        padded = pad_to_blocks(x, self.block_size)
        coeffs = layout_dct(padded * 255.0 - 128.0, self.block_size)
        if self.q_init == "max":
            q = torch.full_like(coeffs, self.q_max)
        elif self.q_init == "min":
            q = torch.full_like(coeffs, self.q_min)
        else:
            u = torch.rand(coeffs.shape, generator=generator, dtype=coeffs.dtype)
            q = (self.q_min + (self.q_max - self.q_min) * u).to(coeffs.device)
        offset = self._dc_offset(coeffs)
        band = None
        if self.bands != "all":
            band = band_layout(self.block_size, coeffs.shape[2:], self.bands, coeffs.device)
        return {
            "coeffs": coeffs,
            "offset": offset,
            "band": band,
            "q": q.requires_grad_(True),
            "shape": tuple(x.shape[2:]),
            "ssim": BlockSSIM(x, self.block_size),
            "schedule": AlphaSchedule(self.steps),
        }

    def _perturb(self, state: dict, step: int):
        return self._reconstruct(state, state["q"], state["schedule"].alpha(step))

    def _reconstruct(self, state: dict, q: torch.Tensor, alpha: float):
        """``(x_adv, extra, ssim)`` of table ``q`` (layout of the coefficients) at rounding ``alpha``."""
        # De-quantized coefficients already in [0,1] units with the +128 carried by the DC terms,
        # so the inverse DCT gives the reconstruction directly (one fused pass, see quantize()).
        scale = 1.0 / 255.0 if self.normalize == "clip" else 1.0
        dequantized = quantize(
            state["coeffs"],
            q,
            alpha,
            self.rounding,
            scale=scale,
            offset=state["offset"] * scale,
        )
        if state["band"] is not None:  # outside the band: the coefficients as they are
            dequantized = torch.where(
                state["band"], dequantized, (state["coeffs"] + state["offset"]) * scale
            )
        padded = self._to_unit_range(layout_idct(dequantized, self.block_size))
        h, w, d = state["shape"]
        x_adv = padded[:, :, :h, :w, :d]
        if self.use_ssim_loss and torch.is_grad_enabled():
            ssim = state["ssim"].padded(padded)
            return x_adv, -self.ssim_weight * (1.0 - ssim), ssim.detach()
        with torch.no_grad():
            ssim = state["ssim"].padded(padded.detach())
        extra = -self.ssim_weight * (1.0 - ssim) if self.use_ssim_loss else None
        return x_adv, extra, ssim

    def _dc_offset(self, coeffs: torch.Tensor) -> torch.Tensor:
        """Layout tensor holding, at every block's DC position, the coefficient of a +128 shift."""
        offset = torch.zeros_like(coeffs)
        n = math.prod(self.block_size)
        steps = (slice(None), slice(None), *(slice(None, None, b) for b in self.block_size))
        offset[steps] = 128.0 * math.sqrt(n)
        return offset

    def _to_unit_range(self, reconstruction: torch.Tensor) -> torch.Tensor:
        """``"clip"``: already scaled by 1/255, clamp; ``"slice"``: per-axial-slice min–max."""
        if self.normalize == "clip":
            return reconstruction.clamp(0.0, 1.0)
        lo = reconstruction.amin(dim=(2, 3), keepdim=True)
        hi = reconstruction.amax(dim=(2, 3), keepdim=True)
        return (reconstruction - lo) / (hi - lo + _SLICE_EPS)

    def _variable(self, state: dict) -> torch.Tensor:
        return state["q"]

    def _update(self, state: dict, grad: torch.Tensor, step: int) -> None:
        with torch.no_grad():
            state["q"].add_(torch.sign(grad), alpha=self.q_step).clamp_(self.q_min, self.q_max)

    def _snapshot(self, state: dict) -> dict[str, torch.Tensor]:
        return {"q": state["q"].detach()}

    def _step_table(self, state: dict) -> torch.Tensor:
        q = state["q"].detach()
        if state["band"] is not None:  # 0: not quantized
            q = torch.where(state["band"], q, torch.zeros((), dtype=q.dtype, device=q.device))
        h, w, d = state["shape"]
        return q[:, :, :h, :w, :d].clone()

    def _history_extras(self, state: dict, step) -> dict[str, Any]:
        return {"alpha": 0.0 if step == "hard" else state["schedule"].alpha(step - 1)}

    def _rework(self, kept: dict[str, torch.Tensor], state: dict):
        if not self.hard_round:
            return None
        return ("hard", *self._reconstruct(state, kept["q"], 0.0))

    def _finish(self, result: AttackResult, kept: dict[str, torch.Tensor], state: dict) -> None:
        q = kept["q"]
        if state["band"] is not None:  # 0: not quantized
            q = torch.where(state["band"], q, torch.zeros((), dtype=q.dtype, device=q.device))
        result.q_tables = to_blocks(q, self.block_size).cpu()


class VAFA2D(VAFA):
    """VAFA on 2D ``h×w`` blocks of every axial (H, W) slice (the paper's VAFA-2D baseline).

    Same arguments as :class:`VAFA` with a two-entry ``block_size`` (default ``(32, 32)``) and the
    SSIM term off by default, as in the published 2D code. ``q_tables`` is ``[B, C, N, h, w]``
    with ``N = n_h·n_w·D``.
    """

    name = "VAFA-2D"
    label = "VAFA-2D"
    options = tuple(
        with_default(o, {"block_size": (32, 32), "use_ssim_loss": False}[o.name])
        if o.name in ("block_size", "use_ssim_loss")
        else o
        for o in VAFA_OPTIONS
    )
    spatial_dims = 2

    def __init__(
        self,
        model: nn.Module,
        *,
        block_size: int | Sequence[int] = (32, 32),
        use_ssim_loss: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(model, block_size=block_size, use_ssim_loss=use_ssim_loss, **kwargs)
