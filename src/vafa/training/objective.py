"""The VAFT objective of each training mode (Eq. 3 of the paper), term by term."""

from __future__ import annotations

import torch
from torch import nn

from vafa.ops.heads import SOFTMAX, Heads
from vafa.ops.losses import DiceBCELoss, DiceCELoss, FrequencyConsistencyLoss
from vafa.training.modes import resolve_mode

__all__ = ["VAFTLoss"]


class VAFTLoss(nn.Module):
    """The training objective of a mode (module docstring), term by term.

    Args:
        mode: one of :data:`MODES`.
        lambda_fr: weight λ of the frequency-consistency term (``"vafa-fr"`` only).
        heads: how the model's outputs are read (``card.heads()``): softmax classes, whose
            ``L_seg`` is the paper's Dice-CE, or sigmoid regions (Dice + BCE, the labels turned
            into region masks).

    ``forward(labels, clean_logits=None, adv_logits=None)``: ``labels`` ``[B, 1, H, W, D]``
    label values, logits ``[B, K, H, W, D]`` of the clean and adversarial patches (the ones
    the mode needs). Returns ``{"loss": total, "clean": …, "adv": …, "fr": …}`` (scalar tensors;
    only the terms of the mode).
    """

    def __init__(
        self, mode: str = "vafa-fr", lambda_fr: float = 1.0, heads: Heads = SOFTMAX
    ) -> None:
        super().__init__()
        self.mode = resolve_mode(mode)
        self.lambda_fr = float(lambda_fr)
        self.heads = heads
        self.seg = DiceBCELoss() if heads.sigmoid else DiceCELoss()
        self.fr = FrequencyConsistencyLoss()

    @property
    def needs_clean(self) -> bool:
        return self.mode in ("vafa-fr", "clean")

    @property
    def needs_adversarial(self) -> bool:
        return self.mode != "clean"

    def forward(
        self,
        labels: torch.Tensor,
        clean_logits: torch.Tensor | None = None,
        adv_logits: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        for name, value, needed in (
            ("clean_logits", clean_logits, self.needs_clean),
            ("adv_logits", adv_logits, self.needs_adversarial),
        ):
            if needed and value is None:
                raise ValueError(f"{name} is required in mode {self.mode!r}")
        terms: dict[str, torch.Tensor] = {}
        if self.heads.sigmoid:  # softmax: the labels as they are (the paper's Dice-CE)
            logits = clean_logits if clean_logits is not None else adv_logits
            labels = self.heads.target(labels, logits.shape[1])
        if self.needs_clean:
            terms["clean"] = self.seg(clean_logits.float(), labels)
        if self.needs_adversarial:
            terms["adv"] = self.seg(adv_logits.float(), labels)
        if self.mode == "vafa-fr":
            terms["fr"] = self.fr(clean_logits.float(), adv_logits.float())
            total = terms["clean"] + terms["adv"] + self.lambda_fr * terms["fr"]
        else:
            total = terms["clean"] if self.mode == "clean" else terms["adv"]
        return {"loss": total, **terms}
