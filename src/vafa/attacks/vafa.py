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
from typing import Any

import torch

from vafa.attacks.base import Attack, AttackResult
from vafa.attacks.options import (
    BANDS_OPTION,
    BLOCK_SIZES,
    FREE,
    KEEP,
    STEPS,
    Option,
    OptionError,
    block_sides,
    block_size,
    with_default,
    with_defaults,
)
from vafa.ops.bands import band_layout
from vafa.ops.frequency import crop_padding, layout_dct, layout_idct, pad_to_blocks, to_blocks
from vafa.ops.quantization import ROUNDINGS, AlphaSchedule, quantize
from vafa.ops.ssim import BlockSSIM

__all__ = ["BLOCK_SIZE", "NORMALIZE_MODES", "PAPER_SETTINGS", "Q_INIT_MODES", "VAFA", "VAFA2D"]

NORMALIZE_MODES = ("clip", "slice")
Q_INIT_MODES = ("max", "min", "random")
_SLICE_EPS = 1e-8

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
    Option("q_init", str, "max", "start of the table: max | min | random", choices=Q_INIT_MODES,
           published="max"),
    Option("q_step", float, 1.0, "table change per step", positive=True, published=1.0),
    BLOCK_SIZE,
    BANDS_OPTION,
    Option(
        "use_ssim_loss", bool, True,
        "subtract ssim_weight × (1 − blockwise SSIM) from the objective",
        label="SSIM loss", flags=("--ssim", "--no-ssim"), widget="check", published=True,
    ),
    Option(
        "ssim_weight", float, 1.0, "weight of the SSIM term", label="SSIM weight", minimum=0.0,
        widget="spin", gui=(0.0, 100.0, 0.1), published=1.0,
    ),
    Option(
        "normalize", str, "clip",
        "how the reconstruction returns to [0, 1]: clip (divide by 255 and clamp) or slice "
        "(min–max of every axial slice, as the published code: itself a contrast change)",
        choices=NORMALIZE_MODES, widget="combo", published="slice",
    ),
    Option("rounding", str, "tanh", "differentiable rounding: tanh (published) | cubic",
           choices=ROUNDINGS, published="tanh"),
    with_default(KEEP, "best", published="last"),
    Option(
        "hard_round", bool, False,
        "return the kept table hard-rounded (a real quantization) instead of the soft-rounded "
        "volume the attack evaluated: usually stronger and more visible",
        label="hard rounding", flags=("--hard-round",), widget="check", published=False,
    ),
    Option(
        "paper", bool, False,
        "the published algorithm: per-slice min–max, the last step's volume, q from q_max in "
        "signed unit steps within [q_min, q_max], SSIM term (3D) of weight 1",
        label="published algorithm", flags=("--paper",), widget="check",
    ),
)  # fmt: skip
#: What ``paper=True`` fixes (the options' ``published`` values): the published code's
#: algorithm — per-slice min–max, the volume of the last step, the table starting at q_max and
#: moved by signed unit steps in [q_min, q_max], soft tanh rounding, the SSIM term with weight 1
#: (on in 3D, off in 2D, as published). q_min, q_max, steps and block size stay free.
PAPER_SETTINGS = {o.name: o.published for o in VAFA_OPTIONS if o.published is not FREE}


class VAFA(Attack):
    """Volumetric Adversarial Frequency Attack on 3D blocks (module docstring).

    ``VAFA(model, **options)``; the published code's bounds are q_min 5 and q_max 20 (Synapse)
    or 10 (ACDC); its experiments use 32³ blocks (code default 8³). ``bands`` other than
    ``"all"`` quantize only the coefficients of one DCT band of every block (thirds of the
    normalised index within the block, :mod:`vafa.ops.bands`); the others pass through (up to
    the return to [0, 1]) and their ``q_tables`` entries are 0 ("not quantized"). ``normalize``:
    ``"clip"`` is a pure frequency perturbation; ``"slice"`` (published, with an epsilon guard)
    adds a contrast change wherever an axial slice does not span [0, 1]. ``paper=True`` fixes
    :data:`PAPER_SETTINGS`; a conflicting value of a fixed option is an error. ``targeted``,
    ``seed``, ``device``, ``clamp_inputs``: see :class:`~vafa.attacks.base.Attack`.

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

    @classmethod
    def _settle(cls, values: dict[str, Any]) -> dict[str, Any]:
        if values["q_min"] > values["q_max"]:
            raise OptionError(
                "q_min",
                f"q_min must be <= q_max, got q_min={values['q_min']!r} > q_max={values['q_max']!r}",
            )
        values["block_size"] = block_sides(values["block_size"], cls.spatial_dims, cls.name)
        return values

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
        x_adv = crop_padding(padded, state["shape"])
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
        return crop_padding(q, state["shape"]).clone()

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

    The options of :class:`VAFA` with a two-entry ``block_size`` (default ``(32, 32)``) and the
    SSIM term off by default (and with ``paper=True``), as in the published 2D code.
    ``q_tables`` is ``[B, C, N, h, w]`` with ``N = n_h·n_w·D``.
    """

    name = "VAFA-2D"
    label = "VAFA-2D"
    options = with_defaults(
        VAFA_OPTIONS,
        block_size={"default": (32, 32)},
        use_ssim_loss={"default": False, "published": False},
    )
    spatial_dims = 2
