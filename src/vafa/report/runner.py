"""One report grid on one model × one case: :func:`iter_grid`, a generator of
:class:`GridProgress` events that returns the result rows (see :data:`RESULT_FIELDS`)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from vafa.ops.amp import with_amp
from vafa.ops.messages import one_line
from vafa.report.grid import GridEntry, unique_entries
from vafa.report.results import RESULT_FIELDS
from vafa.run.outcome_metrics import OutcomeMetrics
from vafa.run.progress import relay

__all__ = ["GridProgress", "case_failure_row", "iter_grid"]


# ----------------------------------------------------------------------------- one grid
@dataclass(frozen=True)
class GridProgress:
    """An event of :func:`iter_grid`.

    Three kinds: an entry starts (``step`` and ``row`` None), an attack step (``step`` is the
    :class:`vafa.attacks.base.StepEvent`), an entry ends (``row`` is its result row).

    Attributes:
        index: 1-based index of the entry among those run; ``total``: how many run.
        entry: the :class:`GridEntry`.
        step: the attack's step event (tile fields set for tiled volumes), or None.
        row: the finished row (see :data:`RESULT_FIELDS`; ``"slice"`` holds the qualitative
            slice when asked), or None.
        model, case: names.
    """

    index: int
    total: int
    entry: GridEntry
    step: Any = None
    row: dict[str, Any] | None = None
    model: str = ""
    case: str = ""


def iter_grid(
    model,
    card,
    image,
    labels,
    entries: Sequence[GridEntry],
    *,
    model_name: str,
    case_name: str,
    device: str = "auto",
    seed: int = 0,
    skip: Iterable[str] = frozenset(),
    on_outcome: Callable[[GridEntry, Any], None] | None = None,
    slices: bool = False,
    lpips=None,
    amp: str = "off",
) -> Generator[GridProgress, bool | None, list[dict[str, Any]]]:
    """Run ``entries`` on one model and one case, as a generator.

    Args:
        model, card: the network and its :class:`vafa.io.models.ModelCard`.
        image: the case (:class:`vafa.io.volume.Volume`, file units).
        labels: its labels (Volume) or None (Dice against the clean prediction, pseudo-labels
            attacked).
        entries: the grid; entries whose key is in ``skip`` (or repeated) are not run.
        on_outcome: called with ``(entry, outcome)`` after every attack entry that finished
            ``ok`` (the report's transfer matrix and band analysis).
        model_name, case_name: written into the rows.
        device: ``"auto"`` runs where the model is.
        seed: seed of every attack.
        slices: keep in every row (``row["slice"]``) the middle axial slice (of the labelled
            extent, when labels exist) of the attacked image in [0, 1] and of its prediction;
            the clean row also holds the reference labels' slice.
        lpips: a :class:`vafa.io.lpips.LPIPS` metric (:func:`vafa.io.lpips.load_lpips`): fills the
            ``lpips`` column (mean over the axial slices of the model input; 0 for the clean
            row; empty when slices are smaller than :data:`vafa.io.lpips.MIN_SLICE`).
        amp: mixed precision of the model passes (``"off"``, ``"bf16"``, ``"fp16"``;
            :func:`vafa.ops.amp.with_amp`).

    Yields:
        :class:`GridProgress` events; ``gen.send(False)`` cancels (within one attack step).

    Returns:
        The rows of the entries done: ``status`` ``"ok"``, ``"failed: <message>"`` (an error
        in that entry; the next entries still run) or ``"cancelled"`` (the entry that was
        running when cancelled; its metrics are those of the partial attack).
    """
    model = with_amp(model, amp)
    skip = set(skip)
    todo = [e for e in unique_entries(entries) if e.key not in skip]
    cell = _Cell(model, card, image, labels, model_name, case_name, device, seed, lpips, on_outcome)
    cell.view = _SliceView.of(model, card, image, labels) if slices else None
    rows: list[dict[str, Any]] = []
    for index, entry in enumerate(todo, 1):
        progress = partial(GridProgress, index, len(todo), entry, model=model_name, case=case_name)
        if (yield progress()) is False:
            break
        row, stopped = yield from cell.run(entry, progress)
        rows.append(row)
        if stopped or (yield progress(row=row)) is False:
            break
    return rows


def case_failure_row(model: str, case: str, err: BaseException, seed: int) -> dict[str, Any]:
    """The row of a case that could not be loaded (``key`` ``"case"``, ``status`` failed)."""
    row = _base_row(GridEntry("", "", {}, ""), model, case, seed)
    row.update(key="case", options="{}", status=f"failed: {one_line(err)}")
    return row


@dataclass
class _Cell:
    """One model × one case of :func:`iter_grid`: runs its entries one at a time."""

    model: Any
    card: Any
    image: Any
    labels: Any
    model_name: str
    case_name: str
    device: str
    seed: int
    lpips: Any = None
    on_outcome: Callable[[GridEntry, Any], None] | None = None
    view: _SliceView | None = None

    def run(
        self, entry: GridEntry, progress: Callable[..., GridProgress]
    ) -> Generator[GridProgress, bool | None, tuple[dict[str, Any], bool]]:
        """Run one entry (attack steps as ``progress(step=event)``); returns ``(row, stopped)``:
        its row, and whether the consumer cancelled during the attack."""
        start = time.perf_counter()
        row = _base_row(entry, self.model_name, self.case_name, self.seed)
        stopped = False
        try:
            if entry.attack == "clean":
                self._clean(row)
            else:
                stopped = yield from self._attack(entry, row, progress)
        except Exception as err:  # one failing entry must not stop the grid
            row["status"] = f"failed: {one_line(err)}"
        row["seconds"] = round(time.perf_counter() - start, 2)
        return row, stopped

    def _clean(self, row: dict[str, Any]) -> None:
        from vafa.run.pipeline import evaluate

        metrics = evaluate(self.model, self.card, self.image, self.labels, device=self.device)
        row.update(_clean_values(metrics))
        if self.lpips is not None:
            row["lpips"] = 0.0
        if self.view is not None:
            row["slice"] = self.view.clean()

    def _attack(self, entry: GridEntry, row: dict[str, Any], progress):
        from vafa.run.pipeline import iter_run_attack

        gen = iter_run_attack(
            self.model,
            self.card,
            self.image,
            self.labels,
            attack=entry.attack,
            options=entry.options,
            device=self.device,
            seed=self.seed,
            through=entry.through,
        )
        stopped = threading.Event()  # set by a False answer of the consumer
        outcome = yield from relay(gen, lambda event: progress(step=event), cancel=stopped)
        row.update(_attack_values(outcome.metrics))
        row["status"] = "cancelled" if stopped.is_set() or outcome.cancelled else "ok"
        if self.lpips is not None:
            row["lpips"] = _lpips_of(self.lpips, outcome)
        if self.view is not None:
            row["slice"] = self.view.attacked(outcome)
        if self.on_outcome is not None and row["status"] == "ok":
            self.on_outcome(entry, outcome)
        return stopped.is_set()


def _lpips_of(metric, outcome) -> float | None:
    """LPIPS between the clean and the attacked model input (None: slices too small)."""

    from vafa.io.lpips import MIN_SLICE, volume_lpips

    clean = outcome.model_input.tensor
    if min(clean.shape[2:4]) < MIN_SLICE:
        return None
    return float(volume_lpips(metric, clean, outcome.adversarial01)[0])


class _SliceView:
    """The middle axial slice (model grid) of one case, for the qualitative figure."""

    def __init__(self, model, card, image, labels) -> None:
        from vafa.io.model_space import labels_to_model_space, to_model_space

        self.model, self.card = model, card
        self.input = to_model_space(image, card)
        self.labels = None if labels is None else labels_to_model_space(labels, self.input)
        depth = self.input.tensor.shape[-1]
        self.index = depth // 2
        if self.labels is not None:
            ks = np.flatnonzero(self.labels[0, 0].numpy().any(axis=(0, 1)))
            if ks.size:
                self.index = int((ks[0] + ks[-1]) // 2)

    @classmethod
    def of(cls, model, card, image, labels) -> _SliceView | None:
        """The view, or None when the case does not map to the model grid (the entries meet,
        and record, the same error)."""
        try:
            return cls(model, card, image, labels)
        except Exception:
            return None

    def clean(self) -> dict[str, Any]:
        from vafa.run.tiling import sliding_window_labels

        tensor, heads = self.input.tensor, self.card.heads()
        pred = sliding_window_labels(
            self.model, tensor, self.card.roi_size, self.card.inference, heads=heads
        )
        out = self._pack(tensor[0, 0].numpy(), heads.merge(pred)[0, 0].cpu().numpy())
        if self.labels is not None:
            out["labels"] = self.labels[0, 0, :, :, self.index].numpy().astype(np.int16)
        return out

    def attacked(self, outcome) -> dict[str, Any]:
        adv01 = outcome.adversarial01[0, 0].numpy()
        return self._pack(adv01, outcome.adversarial_prediction.array)

    def _pack(self, image01: np.ndarray, prediction: np.ndarray) -> dict[str, Any]:
        k = self.index
        return {
            "image": np.asarray(image01[:, :, k], dtype=np.float32),
            "prediction": np.rint(prediction[:, :, k]).astype(np.int16),
            "index": k,
        }


def _base_row(entry: GridEntry, model_name: str, case_name: str, seed: int) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(RESULT_FIELDS)
    row.update(
        model=model_name,
        case=case_name,
        table=entry.table,
        attack=entry.attack,
        setting=entry.setting,
        key=entry.key,
        options=json.dumps(_json_options(entry.options), sort_keys=True),
        status="ok",
        seed=seed,
    )
    return row


def _json_options(options: Mapping[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()}


def _attack_values(metrics: OutcomeMetrics) -> dict[str, Any]:
    out: dict[str, Any] = {"reference": metrics.reference}
    for key in ("dice_fg", "dice", "hd95"):
        pair = getattr(metrics, key)
        out[f"{key}_clean"], out[key] = pair.clean, pair.adversarial
    out.update(
        ssim=metrics.ssim,
        psnr=metrics.psnr,  # None when the volume did not change (infinite PSNR)
        linf=metrics.linf,
        linf_units=metrics.linf_original_units,
        zeroed_fraction=metrics.zeroed_fraction,
        steps_run=metrics.steps_run,
    )
    return out


def _clean_values(metrics: OutcomeMetrics) -> dict[str, Any]:
    """The clean row: the 'attacked' volume is the clean one (SSIM 1, L∞ 0, PSNR infinite)."""
    out = _attack_values(metrics)
    for key in ("dice_fg", "dice", "hd95"):
        out[key] = out[f"{key}_clean"]
    out.update(ssim=1.0, psnr=None, linf=0.0, linf_units=0.0, steps_run=0)
    return out
