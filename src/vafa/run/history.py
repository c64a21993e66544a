"""The iterates of an attack run, step by step, in bounded memory: what a step scrubber shows.

:class:`StepHistory` consumes the :class:`~vafa.attacks.base.StepEvent` of a run (a single
volume, or a tiled one from :func:`vafa.run.tiling.iter_attack_volume`) and keeps, for every
kept step, the volume the model saw at that step, the model's prediction of it and VAFA's
quantization table — stitched over tiles by the tiling's rule (raster order, the later tile
wins), so that step ``k`` of a tiled run is every tile at its own step ``k``.

Memory: the adversarial volume as float16 (2 bytes a voxel: |error| ≤ 2⁻¹¹ on [0, 1]; a value
inside (0, 1) stays inside, so a window's inverse mapping still knows it was not clipped), the
prediction as uint8 (int16 above 255 classes), the table as float16; when keeping every step
would exceed ``cap_bytes``, only every ``stride``-th step is kept (and always the last).
Step 0 is the clean volume (:meth:`StepHistory.set_clean`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from vafa.attacks.base import StepEvent
from vafa.run.progress import relay
from vafa.run.tiles import Slices, crop_tile

__all__ = ["DEFAULT_HISTORY_CAP", "HistoryStep", "StepHistory"]

#: Default memory bound of a history (bytes).
DEFAULT_HISTORY_CAP = 256 * 2**20


@dataclass
class HistoryStep:
    """One kept step.

    Attributes:
        step: the step (0: clean).
        adversarial: ``[C, H, W, D]`` float32 in [0, 1]: the volume the model saw.
        prediction: ``[H, W, D]`` the model's class map of it (None when not recorded).
        q_table: ``[C, H, W, D]`` VAFA's quantization step per voxel position, or None.
        dice: foreground Dice of the step (mean over the tiles that reached it), or None.
        ssim: the attack's SSIM at the step (mean over tiles), or None.
        loss: the attack objective (mean over tiles), or None.
    """

    step: int
    adversarial: np.ndarray
    prediction: np.ndarray | None
    q_table: np.ndarray | None
    dice: float | None
    ssim: float | None
    loss: float | None


class StepHistory:
    """Per-step iterates of one run (see the module docstring).

    Args:
        clean: ``[1, C, H, W, D]`` the clean volume in [0, 1] (the attacked model input).
        steps: steps per tile of the attack.
        tiles: the tiles' slices (:func:`vafa.run.tiles.tile_grid`); None: one tile, the
            whole volume.
        roi: the tile size the tiles were padded to (None: the volume's shape).
        with_tables: keep VAFA's quantization tables.
        cap_bytes: memory bound.
        merge: turns an event's prediction into one class map (``card.heads().merge``: sigmoid
            region masks ``[1, K, …]`` → labels); None: the prediction is a class map.

    Attributes:
        stride: every ``stride``-th step is kept (1: all).
    """

    def __init__(
        self,
        clean: torch.Tensor,
        steps: int,
        *,
        tiles: Sequence[Slices] | None = None,
        roi: Sequence[int] | None = None,
        with_tables: bool = False,
        cap_bytes: int = DEFAULT_HISTORY_CAP,
        merge: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        if clean.dim() != 5 or clean.shape[0] != 1:
            raise ValueError(f"clean must be [1, C, H, W, D], got {tuple(clean.shape)}")
        if steps < 0:
            raise ValueError(f"steps must be >= 0, got {steps}")
        shape = tuple(clean.shape[2:])
        self.channels = int(clean.shape[1])
        self.shape = shape
        self.total = int(steps)
        self.tiles = list(tiles) if tiles is not None else [tuple(slice(0, n) for n in shape)]
        self.roi = tuple(roi) if roi is not None else shape
        self._clean = _unit_f16(clean[0])
        voxels = math.prod(shape)
        per_step = voxels * (2 * self.channels + 1 + (2 * self.channels if with_tables else 0))
        self.stride = max(1, math.ceil(per_step * max(steps, 1) / max(cap_bytes, 1)))
        self._with_tables = with_tables
        self._adv: dict[int, np.ndarray] = {}
        self._pred: dict[int, np.ndarray] = {}
        self._q: dict[int, np.ndarray] = {}
        self._scores: dict[int, dict[str, list[float]]] = {}
        self._clean_prediction: np.ndarray | None = None
        self._merge = merge

    # ------------------------------------------------------------------ recording
    def keeps(self, step: int) -> bool:
        """Whether ``step`` (1-based) is kept."""
        return step == self.total or step % self.stride == 0

    def record(self, event: StepEvent) -> StepEvent:
        """Keep ``event``'s iterate (its tile, when the run is tiled; batch of one tile);
        returns ``event``."""
        step = int(event.step)
        if step < 1 or not self.keeps(step) or event.adversarial.shape[0] != 1:
            return event
        sl = self.tiles[(event.tile or 1) - 1]
        region = (slice(None), *sl)
        adv = self._adv.get(step)
        if adv is None:
            adv = self._adv[step] = self._clean.copy()
        adv[region] = _unit_f16(crop_tile(event.adversarial[0], sl, self.roi))
        if event.prediction is not None:
            pred = self._pred.get(step)
            prediction = event.prediction
            if self._merge is not None:
                prediction = self._merge(prediction)
            part = crop_tile(prediction[0, 0], sl, self.roi)
            if pred is None:
                base = self._clean_prediction
                dtype = np.uint8 if int(part.max()) <= 255 else np.int16
                pred = np.zeros(self.shape, dtype) if base is None else base.astype(dtype)
                self._pred[step] = pred
            pred[sl] = _numpy(part, pred.dtype)
        if self._with_tables and event.q_table is not None:
            q = self._q.get(step)
            if q is None:
                q = self._q[step] = np.zeros((self.channels, *self.shape), np.float16)
            q[region] = _numpy(crop_tile(event.q_table[0], sl, self.roi), np.float16)
        scores = self._scores.setdefault(step, {"dice": [], "ssim": [], "loss": []})
        for name in ("dice", "ssim", "loss"):
            value = getattr(event, name)
            if value is not None and math.isfinite(value):
                scores[name].append(float(value))
        return event

    def recording(self, events: Generator[StepEvent, bool | None, Any]):
        """Forward the generator ``events`` (replies included), recording every event; returns
        its return value: ``result = yield from history.recording(gen)``."""
        return (yield from relay(events, self.record))

    def set_clean_prediction(self, prediction: torch.Tensor | np.ndarray) -> None:
        """The model's class map of the clean volume ``[H, W, D]`` (step 0; the starting
        point of tiles not reached yet)."""
        array = np.asarray(prediction.cpu() if torch.is_tensor(prediction) else prediction)
        array = array.reshape(self.shape)
        self._clean_prediction = array.astype(np.uint8 if array.max() <= 255 else np.int16)

    def release(self) -> None:
        """Free the kept volumes."""
        self._adv.clear()
        self._pred.clear()
        self._q.clear()

    # ------------------------------------------------------------------ reading
    @property
    def steps(self) -> list[int]:
        """The kept steps, 0 (clean) first."""
        return [0, *sorted(self._adv)]

    @property
    def nbytes(self) -> int:
        """Memory held by the kept volumes (bytes)."""
        arrays = [*self._adv.values(), *self._pred.values(), *self._q.values(), self._clean]
        return sum(a.nbytes for a in arrays)

    def nearest(self, step: int) -> int:
        """The kept step closest to ``step`` (the earlier one on a tie)."""
        return min(self.steps, key=lambda kept: (abs(kept - step), kept))

    def scores(self, step: int) -> dict[str, float | None]:
        """``dice``, ``ssim``, ``loss`` of the kept step nearest to ``step`` (means over
        tiles; step 0: SSIM 1, the rest unknown)."""
        step = self.nearest(step)
        if step == 0:
            return {"dice": None, "ssim": 1.0, "loss": None}
        scores = self._scores.get(step, {})
        return {
            name: (float(np.mean(scores[name])) if scores.get(name) else None)
            for name in ("dice", "ssim", "loss")
        }

    def at(self, step: int, channels: Sequence[int] | None = None) -> HistoryStep:
        """The kept step nearest to ``step`` (float32 volume, see :class:`HistoryStep`);
        ``channels``: only these channels of the volume and table (None: all), so that a
        reader of one channel at a time converts no more than that one."""
        step = self.nearest(step)
        pick = slice(None) if channels is None else list(channels)
        if step == 0:
            clean = self._clean[pick].astype(np.float32)
            return HistoryStep(0, clean, self._clean_prediction, None, None, 1.0, None)
        q = self._q.get(step)
        scores = self.scores(step)
        return HistoryStep(
            step,
            self._adv[step][pick].astype(np.float32),
            self._pred.get(step),
            None if q is None else q[pick].astype(np.float32),
            scores["dice"],
            scores["ssim"],
            scores["loss"],
        )


def _unit_f16(tensor: torch.Tensor) -> np.ndarray:
    """[0, 1] values as float16 that stay inside the open interval when they were inside: a
    value just below 1 (or above 0) must not round onto the bound, where an intensity window's
    inverse mapping tells clipped voxels apart (it gives them back their original value)."""
    x = tensor.detach().to("cpu", torch.float32)
    half = x.to(torch.float16)
    below_one = torch.tensor(1.0 - 2.0**-11, dtype=torch.float16)
    above_zero = torch.tensor(2.0**-24, dtype=torch.float16)
    half = torch.where((x < 1) & (half >= 1), below_one, half)
    half = torch.where((x > 0) & (half <= 0), above_zero, half)
    return half.numpy()


def _numpy(tensor: torch.Tensor, dtype) -> np.ndarray:
    return tensor.detach().to("cpu").numpy().astype(dtype, copy=False)
