"""Robustness reports in the form of the paper's tables: attack grids, ``results.csv``,
``report.md`` and plots.

* Grids (:func:`table1_grid`, :func:`sweep_grid`, :func:`report_grid`) are lists of
  :class:`GridEntry`: one attack with explicit options (Table 1/5 rows, the q_max / steps /
  block-size sweeps of Tables 2–4). ``paper=True`` switches every VAFA entry (3D and 2D) to the
  published code's behaviour (per-slice normalisation, last iterate, q in [5, q_max] starting
  at q_max); ``quick=True`` trims the grid (:data:`QUICK_STEPS` steps, fewer settings).
* :func:`iter_grid` runs a grid on one model × one case as a generator of
  :class:`GridProgress` events (``gen.send(False)`` cancels) and returns the result rows.
* :func:`run_report` runs models × cases, appends rows to ``results.csv`` (resumable), then
  writes ``report.md`` and the plots (:func:`write_report`).
* :func:`format_table`, :func:`summarize`, :func:`plot_setting_curves`,
  :func:`plot_attack_bars` render rows (for the napari widget as well as the files).

Numbers are measured with :func:`vafa.pipeline.run_attack` (whole volume, tiled attack,
sliding-window evaluation with overlap 0.5) and :func:`vafa.pipeline.evaluate` (clean row).
"""

from __future__ import annotations

import csv
import datetime
import hashlib
import io
import itertools
import json
import math
import os
import secrets
import time
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "LIBRARY_VAFA",
    "PAPER_VAFA",
    "QUICK_STEPS",
    "RESULT_FIELDS",
    "GridEntry",
    "GridProgress",
    "ReportResult",
    "ReportSettings",
    "format_table",
    "iter_grid",
    "plot_attack_bars",
    "plot_setting_curves",
    "read_results",
    "report_grid",
    "run_report",
    "summarize",
    "sweep_grid",
    "table1_grid",
    "write_report",
]

#: VAFA options of the published code (``--paper``): the attack's ``paper=True``
#: (:data:`vafa.attacks.vafa.PAPER_SETTINGS`) with the published q_min.
PAPER_VAFA: dict[str, Any] = {"paper": True, "q_min": 5}
#: The library's VAFA defaults, written out so that the result keys say what ran.
LIBRARY_VAFA: dict[str, Any] = {"normalize": "clip", "keep": "best", "q_min": 5, "q_init": "max"}
#: Attack steps of the iterative attacks in a ``quick`` grid (the full grid: 20, the paper's).
QUICK_STEPS = 10
FULL_STEPS = 20
#: The sweeps of Tables 2–4 (full and quick): q_max, steps, block size (VAFA 3D).
SWEEPS = {
    "qmax": ((10, 20, 30, 40, 50, 60, 70, 80), (10, 20, 30)),
    "steps": ((10, 20, 30, 40, 50, 60), (2, 5, 10)),
    "block": ((4, 8, 16, 32, 48, 96), (8, 32, 96)),
}
SWEEP_TITLES = {
    "qmax": ("Table 2: VAFA vs q_max", "q_max", "dice_vs_qmax.png"),
    "steps": ("Table 3: VAFA vs attack steps", "steps", "dice_vs_steps.png"),
    "block": ("Table 4: VAFA vs block size", "block size (voxels per side)", "dice_vs_block.png"),
}
_DISPLAY = {
    "clean": "clean",
    "vafa": "VAFA",
    "vafa2d": "VAFA-2D",
    "pgd": "PGD",
    "fgsm": "FGSM",
    "bim": "BIM",
    "gn": "GN",
}
#: Columns of ``results.csv`` (metrics: adversarial values; ``*_clean``: the clean ones).
RESULT_FIELDS = (
    "model",
    "case",
    "table",
    "attack",
    "setting",
    "key",
    "options",
    "status",
    "reference",
    "dice_fg_clean",
    "dice_fg",
    "dice_clean",
    "dice",
    "hd95_clean",
    "hd95",
    "ssim",
    "psnr",
    "linf",
    "linf_units",
    "lpips",
    "zeroed_fraction",
    "steps_run",
    "seed",
    "seconds",
)
_NUMERIC = RESULT_FIELDS[RESULT_FIELDS.index("dice_fg_clean") :]
_METRIC_COLUMNS = (
    ("dice_fg", "Dice fg", 3),
    ("dice", "DSC", 3),
    ("hd95", "HD95 (mm)", 1),
    ("ssim", "SSIM", 3),
    ("psnr", "PSNR (dB)", 1),
    ("linf", "L∞", 3),
    ("lpips", "LPIPS", 3),
)
RESULTS_CSV = "results.csv"
REPORT_MD = "report.md"
SLICES_DIR = "slices"


# ----------------------------------------------------------------------------- grids
@dataclass(frozen=True)
class GridEntry:
    """One attack setting of a report grid.

    Attributes:
        table: the table it belongs to: ``"table1"``, ``"qmax"``, ``"steps"`` or ``"block"``.
        attack: ``"clean"`` or a name of :func:`vafa.attacks.build_attack`.
        options: the attack's options, explicit (e.g. ``{"eps": 4, "alpha": 0.01, "steps": 20}``).
        setting: a short label (``"ε=4"``, ``"q_max=30"``, ``"32³"``).
    """

    table: str
    attack: str
    options: dict[str, Any] = field(default_factory=dict, hash=False)
    setting: str = ""

    @property
    def key(self) -> str:
        """Stable id of what runs (attack and sorted options), e.g. ``"pgd|alpha=0.01,eps=4,steps=20"``;
        the same setting in two tables has one key."""
        if self.attack == "clean":
            return "clean"
        parts = ",".join(f"{k}={_format_option(v)}" for k, v in sorted(self.options.items()))
        return f"{self.attack}|{parts}"

    @property
    def label(self) -> str:
        """``"PGD ε=4"``, ``"clean"``."""
        name = _DISPLAY.get(self.attack, self.attack)
        return f"{name} {self.setting}".strip()


def table1_grid(*, quick: bool = False, paper: bool = False) -> list[GridEntry]:
    """The rows of the paper's Table 1/5.

    Full: clean; PGD, FGSM, BIM at ε 4 and 8 ([0, 255] units, α 0.01, 20 steps); GN σ 4 and 8;
    VAFA-2D (q_max 20, 32² blocks, 20 steps); VAFA q_max 20 and 30 (32³ blocks, 20 steps, SSIM
    term on). Quick: clean, PGD ε 4, FGSM ε 4, GN σ 4, VAFA-2D, VAFA q_max 20 and 30, with
    :data:`QUICK_STEPS` steps.
    """
    steps = QUICK_STEPS if quick else FULL_STEPS
    budgets = (4,) if quick else (4, 8)
    entries = [GridEntry("table1", "clean", {}, "")]
    for attack in ("pgd", "fgsm") if quick else ("pgd", "fgsm", "bim"):
        for eps in budgets:
            options: dict[str, Any] = {"eps": eps}
            if attack != "fgsm":
                options.update(alpha=0.01, steps=steps)
            entries.append(GridEntry("table1", attack, options, f"ε={eps}"))
    entries += [GridEntry("table1", "gn", {"std": s}, f"σ={s}") for s in budgets]
    mode = PAPER_VAFA if paper else LIBRARY_VAFA
    entries.append(
        GridEntry(
            "table1",
            "vafa2d",
            {"q_max": 20, "steps": steps, "block_size": (32, 32), **mode},
            "q_max=20, 32²",
        )
    )
    entries += [_vafa("table1", paper, q_max=q, steps=steps) for q in (20, 30)]
    return entries


def sweep_grid(*, quick: bool = False, paper: bool = False) -> list[GridEntry]:
    """VAFA sweeps of Tables 2–4 (32³ blocks, q_max 20, the grid's steps unless swept).

    Full: q_max 10…80 (step 10), steps 10…60 (step 10), block size 4, 8, 16, 32, 48, 96.
    Quick (:data:`QUICK_STEPS` steps): q_max 10, 20, 30; steps 2, 5, 10; blocks 8, 32, 96.
    """
    steps = QUICK_STEPS if quick else FULL_STEPS
    pick = 1 if quick else 0
    entries = [_vafa("qmax", paper, q_max=q, steps=steps) for q in SWEEPS["qmax"][pick]]
    entries += [_vafa("steps", paper, steps=s) for s in SWEEPS["steps"][pick]]
    entries += [_vafa("block", paper, steps=steps, block_size=b) for b in SWEEPS["block"][pick]]
    return entries


def report_grid(
    *, quick: bool = False, paper: bool = False, sweeps: bool = True
) -> list[GridEntry]:
    """:func:`table1_grid` then (``sweeps``) :func:`sweep_grid`, without repeated keys (a
    setting shared by two tables runs once; tables look results up by key)."""
    entries = table1_grid(quick=quick, paper=paper)
    if sweeps:
        entries += sweep_grid(quick=quick, paper=paper)
    return _unique(entries)


def _vafa(table: str, paper: bool, *, q_max=20, steps=FULL_STEPS, block_size=32) -> GridEntry:
    options = {"q_max": q_max, "steps": steps, "block_size": block_size}
    options.update(PAPER_VAFA if paper else LIBRARY_VAFA)
    setting = {
        "qmax": f"q_max={q_max}",
        "steps": f"steps={steps}",
        "block": f"{block_size}³",
        "table1": f"q_max={q_max}",
    }[table]
    return GridEntry(table, "vafa", options, setting)


def _unique(entries: Iterable[GridEntry]) -> list[GridEntry]:
    seen: set[str] = set()
    out = []
    for entry in entries:
        if entry.key not in seen:
            seen.add(entry.key)
            out.append(entry)
    return out


def _format_option(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "x".join(_format_option(v) for v in value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _sweep_value(entry: GridEntry, table: str) -> float:
    option = {"qmax": "q_max", "steps": "steps", "block": "block_size"}[table]
    return float(entry.options[option])


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
    slices: bool = False,
    lpips=None,
) -> Generator[GridProgress, bool | None, list[dict[str, Any]]]:
    """Run ``entries`` on one model and one case, as a generator.

    Args:
        model, card: the network and its :class:`vafa.models.ModelCard`.
        image: the case (:class:`vafa.volume.Volume`, file units).
        labels: its labels (Volume) or None (Dice against the clean prediction, pseudo-labels
            attacked).
        entries: the grid; entries whose key is in ``skip`` (or repeated) are not run.
        model_name, case_name: written into the rows.
        device: ``"auto"`` runs where the model is.
        seed: seed of every attack.
        slices: keep in every row (``row["slice"]``) the middle axial slice (of the labelled
            extent, when labels exist) of the attacked image in [0, 1] and of its prediction;
            the clean row also holds the reference labels' slice.
        lpips: a :class:`vafa.lpips.LPIPS` metric (:func:`vafa.lpips.load_lpips`): fills the
            ``lpips`` column (mean over the axial slices of the model input; 0 for the clean
            row; empty when slices are smaller than :data:`vafa.lpips.MIN_SLICE`).

    Yields:
        :class:`GridProgress` events; ``gen.send(False)`` cancels (within one attack step).

    Returns:
        The rows of the entries done: ``status`` ``"ok"``, ``"failed: <message>"`` (an error
        in that entry; the next entries still run) or ``"cancelled"`` (the entry that was
        running when cancelled; its metrics are those of the partial attack).
    """
    from vafa.pipeline import evaluate, iter_run_attack

    skip = set(skip)
    todo = [e for e in _unique(entries) if e.key not in skip]
    rows: list[dict[str, Any]] = []
    view = None
    if slices:
        try:
            view = _SliceView(model, card, image, labels)
        except Exception:  # the entries meet (and record) the same error
            view = None
    for index, entry in enumerate(todo, 1):

        def progress(step=None, row=None, entry=entry, index=index):
            return GridProgress(index, len(todo), entry, step, row, model_name, case_name)

        if (yield progress()) is False:
            break
        start = time.perf_counter()
        row = _base_row(entry, model_name, case_name, seed)
        stopped = False
        try:
            if entry.attack == "clean":
                metrics = evaluate(model, card, image, labels, device=device)
                row.update(_clean_values(metrics))
                if lpips is not None:
                    row["lpips"] = 0.0
                if view is not None:
                    row["slice"] = view.clean()
            else:
                gen = iter_run_attack(
                    model,
                    card,
                    image,
                    labels,
                    attack=entry.attack,
                    options=entry.options,
                    device=device,
                    seed=seed,
                )
                outcome, stopped = yield from _relay(gen, progress)
                row.update(_attack_values(outcome.metrics))
                row["status"] = "cancelled" if stopped or outcome.cancelled else "ok"
                if lpips is not None:
                    row["lpips"] = _lpips_of(lpips, outcome)
                if view is not None:
                    row["slice"] = view.attacked(outcome)
        except Exception as err:  # one failing entry must not stop the grid
            row["status"] = f"failed: {_one_line(err)}"
        row["seconds"] = round(time.perf_counter() - start, 2)
        rows.append(row)
        if stopped:
            break
        if (yield progress(row=row)) is False:
            break
    return rows


def _lpips_of(metric, outcome) -> float | None:
    """LPIPS between the clean and the attacked model input (None: slices too small)."""
    import torch

    from vafa.lpips import MIN_SLICE, volume_lpips

    clean = outcome.model_input.tensor
    if min(clean.shape[2:4]) < MIN_SLICE:
        return None
    adversarial01 = outcome.model_input.mapping.forward(outcome.adversarial.array)
    adversarial = torch.as_tensor(np.asarray(adversarial01, dtype=np.float32))[None, None]
    return float(volume_lpips(metric, clean, adversarial)[0])


def _relay(gen, progress) -> Generator[GridProgress, bool | None, tuple[Any, bool]]:
    """Forward the attack's step events (wrapped) and the consumer's answers."""
    stopped = False
    try:
        event = next(gen)
        while True:
            answer = yield progress(step=event)
            stopped = stopped or answer is False
            event = gen.send(answer)
    except StopIteration as stop:
        return stop.value, stopped


class _SliceView:
    """The middle axial slice (model grid) of one case, for the qualitative figure."""

    def __init__(self, model, card, image, labels) -> None:
        from vafa.pipeline import labels_to_model_space, to_model_space

        self.model, self.card = model, card
        self.input = to_model_space(image, card)
        self.labels = None if labels is None else labels_to_model_space(labels, self.input)
        depth = self.input.tensor.shape[-1]
        self.index = depth // 2
        if self.labels is not None:
            ks = np.flatnonzero(self.labels[0, 0].numpy().any(axis=(0, 1)))
            if ks.size:
                self.index = int((ks[0] + ks[-1]) // 2)

    def clean(self) -> dict[str, Any]:
        from vafa.pipeline import PREDICTION_OVERLAP
        from vafa.tiling import sliding_window_labels

        tensor = self.input.tensor
        pred = sliding_window_labels(
            self.model, tensor, self.card.roi_size, overlap=PREDICTION_OVERLAP
        )
        out = self._pack(tensor[0, 0].numpy(), pred[0, 0].cpu().numpy())
        if self.labels is not None:
            out["labels"] = self.labels[0, 0, :, :, self.index].numpy().astype(np.int16)
        return out

    def attacked(self, outcome) -> dict[str, Any]:
        adv01 = outcome.model_input.mapping.forward(outcome.adversarial.array)
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


def _pair(metrics: Mapping[str, Any], key: str) -> tuple[Any, Any]:
    value = metrics.get(key) or {}
    return value.get("clean"), value.get("adversarial")


def _attack_values(metrics: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"reference": metrics.get("reference")}
    for key in ("dice_fg", "dice", "hd95"):
        out[f"{key}_clean"], out[key] = _pair(metrics, key)
    out.update(
        ssim=metrics.get("ssim"),
        psnr=metrics.get("psnr"),  # None when the volume did not change (infinite PSNR)
        linf=metrics.get("linf"),
        linf_units=metrics.get("linf_original_units"),
        zeroed_fraction=metrics.get("zeroed_fraction"),
        steps_run=metrics.get("steps_run"),
    )
    return out


def _clean_values(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The clean row: the 'attacked' volume is the clean one (SSIM 1, L∞ 0, PSNR infinite)."""
    out = _attack_values(metrics)
    for key in ("dice_fg", "dice", "hd95"):
        out[key] = out[f"{key}_clean"]
    out.update(ssim=1.0, psnr=None, linf=0.0, linf_units=0.0, steps_run=0)
    return out


def _one_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return " ".join(text.split())


# ----------------------------------------------------------------------------- many grids
@dataclass(frozen=True)
class ReportSettings:
    """How a report was run (stated in ``report.md``).

    Attributes:
        quick: the trimmed grid. paper: VAFA as the published code (:data:`PAPER_VAFA`).
        sweeps: run Tables 2–4. sweep_models: ``"first"`` (sweeps on the first model only,
            the default, to save time) or ``"all"``. device, seed: as given. lpips: LPIPS
            weights were given.
    """

    quick: bool = False
    paper: bool = False
    sweeps: bool = True
    sweep_models: str = "first"
    device: str = "auto"
    seed: int = 0
    lpips: bool = False

    def grid(self, model_index: int) -> list[GridEntry]:
        """The entries run on the ``model_index``-th model."""
        sweeps = self.sweeps and (self.sweep_models == "all" or model_index == 0)
        return report_grid(quick=self.quick, paper=self.paper, sweeps=sweeps)


@dataclass
class ReportResult:
    """What :func:`run_report` did.

    Attributes:
        out_dir: the report folder; ``results_csv``: its ``results.csv``.
        report: ``report.md`` (None when cancelled: no partial report is written).
        plots: ``{name: path}`` of the PNGs written.
        rows: the rows of ``results.csv`` for the given models and cases (latest per entry).
        ran, skipped, failed: entries run now, skipped as already done, failed now.
        cancelled: the callback stopped the run.
        table6: Table 6 (every model × every Table-1 attack) as Markdown.
    """

    out_dir: Path
    results_csv: Path
    report: Path | None = None
    plots: dict[str, Path] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    ran: int = 0
    skipped: int = 0
    failed: int = 0
    cancelled: bool = False
    table6: str = ""


def run_report(
    models: Sequence[tuple[str, str | os.PathLike]],
    cases: Sequence[tuple[str, str | os.PathLike, str | os.PathLike | None]],
    out_dir: str | os.PathLike,
    *,
    quick: bool = False,
    paper: bool = False,
    sweeps: bool = True,
    sweep_models: str = "first",
    device: str = "auto",
    seed: int = 0,
    trust: bool = False,
    lpips_weights: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    callback: Callable[[GridProgress], bool | None] | None = None,
) -> ReportResult:
    """Run the report grid on every model × case and write the report into ``out_dir``.

    Args:
        models: ``(name, weights)``: a path (card beside it) or a bundled model name
            (:data:`vafa.data.BUNDLED_MODELS`). Names must be unique.
        cases: ``(name, image, labels or None)`` NIfTI paths. Names must be unique; the first
            case is the one of the qualitative figure.
        out_dir: the report folder (created). Writes ``results.csv`` (one row per model ×
            case × entry, appended and flushed row by row), ``report.md``, ``dice_vs_qmax.png``,
            ``dice_vs_steps.png``, ``dice_vs_block.png``, ``table1_bars.png``,
            ``qualitative.png`` and ``slices/`` (the figure's slices, kept for resumed runs).
        quick, paper, sweeps, sweep_models: see :class:`ReportSettings`.
        device: where the models run. seed: seed of every attack.
        trust: allow pickled checkpoints (:func:`vafa.checkpoints.load_model`), LPIPS weight
            files included.
        lpips_weights: local LPIPS/AlexNet weight file(s) (:func:`vafa.lpips.load_lpips`):
            fills the ``lpips`` column of the entries run now.
        callback: receives every :class:`GridProgress`; returning False cancels (the rows done
            stay in ``results.csv``; no report is written).

    Resuming: entries whose ``(model, case, key)`` already has an ``ok`` row in
    ``results.csv`` are skipped. A case that cannot be loaded and an entry that fails are
    recorded as ``failed`` rows; the rest continue (re-running retries them).

    Raises:
        ValueError, TypeError, FileNotFoundError: bad names, missing files, models or LPIPS
            weights that do not load, a ``results.csv`` with other columns — all before
            anything is written.
    """
    from vafa.checkpoints import load_model
    from vafa.data import BUNDLED_MODELS, bundled_model_path

    settings = ReportSettings(
        quick, paper, sweeps, sweep_models, str(device), seed, lpips=lpips_weights is not None
    )
    if sweep_models not in ("first", "all"):
        raise ValueError(f"sweep_models must be 'first' or 'all', got {sweep_models!r}")
    model_names = _unique_names([m[0] for m in models], "model")
    case_names = _unique_names([c[0] for c in cases], "case")
    case_paths = []
    for name, image, labels in cases:
        for path in (image, labels):
            if path is not None and not Path(path).is_file():
                raise FileNotFoundError(f"case {name}: {path} does not exist")
        case_paths.append((Path(image), None if labels is None else Path(labels)))
    out_dir = Path(out_dir)
    csv_path = out_dir / RESULTS_CSV
    previous = read_results(csv_path)  # checks the columns before anything runs
    loaded = []
    for name, weights in models:
        weights = str(weights)
        if weights in BUNDLED_MODELS:
            path = bundled_model_path(weights)
            model, card = load_model(path, device=device)
        else:
            path = Path(weights)
            model, card = load_model(path, device=device, trust=trust)
        loaded.append((name, path, model, card))
    metric = None
    if lpips_weights is not None:
        from vafa.devices import resolve_device
        from vafa.lpips import load_lpips

        metric = load_lpips(lpips_weights, device=resolve_device(device), trust=trust)

    done = {(r["model"], r["case"], r["key"]) for r in previous if r["status"] == "ok"}
    out_dir.mkdir(parents=True, exist_ok=True)
    result = ReportResult(out_dir=out_dir, results_csv=csv_path)
    with _ResultsWriter(csv_path) as writer:
        for m, (name, _, model, card) in enumerate(loaded):
            entries = settings.grid(m)
            for c, (case, (image_path, labels_path)) in enumerate(
                zip(case_names, case_paths, strict=True)
            ):
                skip = {e.key for e in entries if (name, case, e.key) in done}
                result.skipped += len(skip)
                if len(skip) == len(entries):
                    continue
                try:
                    image, labels = _load_case(image_path, labels_path, card)
                except Exception as err:  # a bad case is recorded, the others continue
                    writer.write(_case_failure(name, case, err, seed))
                    result.failed += 1
                    continue
                gen = iter_grid(
                    model,
                    card,
                    image,
                    labels,
                    entries,
                    model_name=name,
                    case_name=case,
                    device=device,
                    seed=seed,
                    skip=skip,
                    slices=c == 0,
                    lpips=metric,
                )
                for event in _drive_events(gen, callback, result):
                    if event.row is not None:
                        _save_slice(out_dir, event.row)
                        writer.write(event.row)
                        result.ran += 1
                        result.failed += event.row["status"].startswith("failed")
                if result.cancelled:
                    break
            if result.cancelled:
                break
    result.rows = _in_scope(read_results(csv_path), model_names, case_names)
    if result.cancelled:
        return result
    described = [(name, _describe_model(path, card)) for name, path, _, card in loaded]
    described_cases = [
        (case, image, labels) for case, (image, labels) in zip(case_names, case_paths, strict=True)
    ]
    paths = write_report(out_dir, result.rows, described, described_cases, settings)
    result.report = paths.pop("report")
    result.plots = paths
    result.table6 = format_table(
        result.rows, table1_grid(quick=quick, paper=paper), model_names, metrics=("dice_fg", "dice")
    )
    return result


def _drive_events(gen, callback, result: ReportResult):
    """Iterate :func:`iter_grid` events, sending the callback's answers; marks a cancel."""
    try:
        event = next(gen)
        while True:
            yield event
            answer = callback(event) if callback is not None else None
            if answer is False:
                result.cancelled = True
            event = gen.send(answer)
    except StopIteration:
        return


def _load_case(image_path: Path, labels_path: Path | None, card):
    from vafa.volume import load_labels, load_volume

    image = load_volume(image_path)
    labels = None if labels_path is None else load_labels(labels_path, image, card.out_channels)
    return image, labels


def _case_failure(model: str, case: str, err: BaseException, seed: int) -> dict[str, Any]:
    row = _base_row(GridEntry("", "", {}, ""), model, case, seed)
    row.update(key="case", options="{}", status=f"failed: {_one_line(err)}")
    return row


def _unique_names(names: Sequence[str], what: str) -> list[str]:
    names = [str(n) for n in names]
    if not names:
        raise ValueError(f"give at least one {what}")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes or any(not n for n in names):
        raise ValueError(f"{what} names must be unique and non-empty, got {names}")
    return names


def _describe_model(path: Path, card) -> str:
    return f"`{path.name}` ({card.architecture}, {card.out_channels} classes, roi {card.roi_size})"


# ----------------------------------------------------------------------------- results.csv
class _ResultsWriter:
    """Append-only ``results.csv``: header once, every row flushed to disk."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> _ResultsWriter:
        fresh = not self.path.exists() or self.path.stat().st_size == 0
        torn = not fresh and not self.path.read_bytes().endswith(b"\n")
        self.file = open(self.path, "a", newline="", encoding="utf-8")
        if torn:  # an interrupted write left half a line: start a new one
            self.file.write("\n")
        self.writer = csv.DictWriter(self.file, RESULT_FIELDS, extrasaction="ignore")
        if fresh:
            self.writer.writeheader()
        return self

    def write(self, row: Mapping[str, Any]) -> None:
        self.writer.writerow({k: _csv_value(row.get(k)) for k in RESULT_FIELDS})
        self.file.flush()
        os.fsync(self.file.fileno())

    def __exit__(self, *exc) -> None:
        self.file.close()


def _csv_value(value: Any) -> Any:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


def read_results(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of a ``results.csv`` (numbers as float, empty cells as None); [] if absent.

    Raises:
        ValueError: the file has other columns than :data:`RESULT_FIELDS`.
    """
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != RESULT_FIELDS:
            raise ValueError(
                f"{path} has columns {reader.fieldnames}, expected {list(RESULT_FIELDS)} "
                "(not a report of this version: choose another output folder)"
            )
        rows = []
        for raw in reader:
            if None in raw or any(v is None for v in raw.values()):
                continue  # a torn last line
            row: dict[str, Any] = dict(raw)
            for key in _NUMERIC:
                row[key] = _number(raw[key])
            rows.append(row)
    return rows


def _number(text: Any) -> float | None:
    if text is None or text == "":
        return None
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _in_scope(rows, model_names, case_names) -> list[dict[str, Any]]:
    """The latest row of every (model, case, key) of these models and cases; an ``ok`` row
    wins over a later failed or cancelled one."""
    latest: dict[tuple[str, str, str], dict[str, Any]] = {}
    for row in rows:
        if row["model"] not in model_names or row["case"] not in case_names:
            continue
        ident = (row["model"], row["case"], row["key"])
        old = latest.get(ident)
        if old is None or row["status"] == "ok" or old["status"] != "ok":
            latest[ident] = row
    loaded = {(m, c) for (m, c, key) in latest if key != "case"}
    # a case that failed to load once and ran later is no longer a failure
    return [r for (m, c, key), r in latest.items() if key != "case" or (m, c) not in loaded]


# ----------------------------------------------------------------------------- tables
def summarize(rows: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """Mean over cases of the ``ok`` rows: ``{(model, key): {metric: mean or None, "cases": n}}``."""
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for row in rows:
        if row.get("status") == "ok":
            groups.setdefault((row["model"], row["key"]), []).append(row)
    out = {}
    for ident, members in groups.items():
        summary: dict[str, Any] = {"cases": len(members)}
        for key in _NUMERIC:
            values = [v for v in (_number(r.get(key)) for r in members) if v is not None]
            summary[key] = float(np.mean(values)) if values else None
        out[ident] = summary
    return out


def format_table(
    rows: Iterable[Mapping[str, Any]],
    entries: Sequence[GridEntry],
    models: Sequence[str],
    *,
    metrics: Sequence[str] = ("dice_fg", "dice", "hd95", "ssim", "psnr", "linf"),
    setting_header: str = "attack",
) -> str:
    """A Markdown table: a row per entry, for every model the columns ``metrics`` (means over
    cases; ``–`` when missing or failed)."""
    from vafa.tables import _num

    summary = summarize(rows)
    names = {key: (title, digits) for key, title, digits in _METRIC_COLUMNS}
    multi = len(models) > 1
    header = [setting_header]
    for model in models:
        header += [f"{model} {names[m][0]}" if multi else names[m][0] for m in metrics]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for entry in _unique(entries):
        cells = [entry.label if setting_header == "attack" else entry.setting]
        for model in models:
            values = summary.get((model, entry.key)) or {}
            cells += [_num(values.get(m), names[m][1]) for m in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- plots
def plot_setting_curves(axes, rows, entries: Sequence[GridEntry], table: str, models) -> None:
    """Dice fg (``axes[0]``) and SSIM (``axes[1]``) against a swept setting, a line per model
    (dashed: the model's clean Dice)."""
    summary = summarize(rows)
    _, xlabel, _ = SWEEP_TITLES[table]
    points = sorted((_sweep_value(e, table), e.key) for e in entries if e.table == table)
    for n, model in enumerate(models):
        color = f"C{n}"
        xs, dice, ssim = [], [], []
        for x, key in points:
            values = summary.get((model, key))
            if values is not None and values["dice_fg"] is not None:
                xs.append(x)
                dice.append(values["dice_fg"])
                ssim.append(values["ssim"] if values["ssim"] is not None else np.nan)
        if not xs:
            continue
        axes[0].plot(xs, dice, "o-", color=color, label=model)
        axes[1].plot(xs, ssim, "o-", color=color, label=model)
        clean = (summary.get((model, "clean")) or {}).get("dice_fg")
        if clean is not None:
            axes[0].axhline(clean, color=color, ls="--", lw=1, label=f"{model} clean")
    for ax, name in zip(axes, ("foreground Dice", "SSIM"), strict=True):
        ax.set_xlabel(xlabel)
        ax.set_ylabel(name)
        if table == "block":
            ax.set_xscale("log", base=2)
        ax.set_xticks([x for x, _ in points])
        ax.set_xticklabels([_format_option(x) for x, _ in points])
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)


def plot_attack_bars(ax, rows, entries: Sequence[GridEntry], models, metric="dice_fg") -> None:
    """Grouped bars: ``metric`` per entry (x) and model (colour)."""
    summary = summarize(rows)
    entries = _unique(entries)
    x = np.arange(len(entries))
    width = 0.8 / max(1, len(models))
    for n, model in enumerate(models):
        values = [(summary.get((model, e.key)) or {}).get(metric) for e in entries]
        heights = [np.nan if v is None else v for v in values]
        ax.bar(x + (n - (len(models) - 1) / 2) * width, heights, width, label=model)
    ax.set_xticks(x)
    ax.set_xticklabels([e.label for e in entries], rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 1.15)  # room for the legend above the bars
    ax.set_ylabel({"dice_fg": "foreground Dice", "dice": "DSC", "ssim": "SSIM"}.get(metric, metric))
    ax.grid(axis="y", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="upper right", ncol=len(models))


def _figure(*args, **kwargs):
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    return Figure(*args, **kwargs)


def _write_plots(out_dir, rows, models, sweep_models, cases, settings) -> dict[str, Path]:
    from vafa.figures import save_png

    paths: dict[str, Path] = {}
    sweeps = sweep_grid(quick=settings.quick, paper=settings.paper)
    if settings.sweeps:
        for table, (_, _, filename) in SWEEP_TITLES.items():
            fig = _figure(figsize=(10, 4), dpi=90)
            axes = fig.subplots(1, 2)
            plot_setting_curves(axes, rows, sweeps, table, sweep_models)
            fig.suptitle(SWEEP_TITLES[table][0])
            fig.tight_layout()
            paths[table] = save_png(fig, out_dir / filename)
    table1 = table1_grid(quick=settings.quick, paper=settings.paper)
    fig = _figure(figsize=(11, 7), dpi=90)
    top, bottom = fig.subplots(2, 1)
    plot_attack_bars(top, rows, table1, models, "dice_fg")
    plot_attack_bars(bottom, rows, table1, models, "ssim")
    fig.suptitle("Table 1: foreground Dice and SSIM under each attack")
    fig.tight_layout()
    paths["table1_bars"] = save_png(fig, out_dir / "table1_bars.png")
    qualitative = _qualitative(out_dir, rows, table1, models, cases[0][0])
    if qualitative is not None:
        paths["qualitative"] = qualitative
    return paths


def _slice_path(out_dir: Path, model: str, case: str, key: str) -> Path:
    digest = hashlib.sha1(f"{model}\0{case}\0{key}".encode()).hexdigest()[:16]
    return Path(out_dir) / SLICES_DIR / f"{digest}.npz"


def _save_slice(out_dir: Path, row: Mapping[str, Any]) -> None:
    """Keep a finished row's qualitative slice on disk (atomic), for resumed reports."""
    data = row.get("slice")
    if not data or row.get("status") != "ok":
        return
    path = _slice_path(out_dir, row["model"], row["case"], row["key"])
    path.parent.mkdir(exist_ok=True)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **{k: np.asarray(v) for k, v in data.items()})
    _atomic_write(path, buffer.getvalue())


def _qualitative(out_dir, rows, entries, models, case) -> Path | None:
    """The paper's Fig. 2: one case, a column per attack, per model the (attacked) image and
    its prediction over it; the ground truth in the first column when labels exist."""
    from matplotlib.colors import ListedColormap

    from vafa.figures import label_colors, save_png

    summary = summarize(r for r in rows if r["case"] == case)
    panels: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    for model in models:
        for entry in entries:
            path = _slice_path(out_dir, model, case, entry.key)
            if path.is_file():
                with np.load(path) as data:
                    panels[model, entry.key] = {k: data[k] for k in data.files}
    if not panels:
        return None
    columns = [e for e in entries if any((m, e.key) in panels for m in models)]
    has_truth = any("labels" in p for p in panels.values())
    n_cols = len(columns) + has_truth
    n_classes = 1 + max(
        int(p[k].max()) for p in panels.values() for k in ("prediction", "labels") if k in p
    )
    cmap = ListedColormap(label_colors(max(n_classes, 2)))
    style = dict(cmap=cmap, vmin=0, vmax=max(n_classes, 2) - 1, interpolation="nearest")
    fig = _figure(figsize=(1.9 * n_cols, 2.0 * 2 * len(models) + 0.6), dpi=90)
    axes = np.asarray(fig.subplots(2 * len(models), n_cols, squeeze=False))
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_frame_on(False)
    for m, model in enumerate(models):
        image_ax, pred_ax = axes[2 * m], axes[2 * m + 1]
        image_ax[0].set_ylabel(f"{model}\nimage", fontsize=8)
        pred_ax[0].set_ylabel(f"{model}\nprediction", fontsize=8)
        clean = panels.get((model, "clean"))
        if clean is not None and "labels" in clean:
            image_ax[0].imshow(clean["image"].T, cmap="gray", vmin=0, vmax=1, origin="lower")
            pred_ax[0].imshow(clean["image"].T, cmap="gray", vmin=0, vmax=1, origin="lower")
            truth = np.ma.masked_equal(clean["labels"].T, 0)
            pred_ax[0].imshow(truth, origin="lower", alpha=0.8, **style)
            image_ax[0].set_title("ground truth", fontsize=8)
        for j, entry in enumerate(columns, int(has_truth)):
            panel = panels.get((model, entry.key))
            if panel is None:
                continue
            image_ax[j].imshow(panel["image"].T, cmap="gray", vmin=0, vmax=1, origin="lower")
            pred_ax[j].imshow(panel["image"].T, cmap="gray", vmin=0, vmax=1, origin="lower")
            pred = np.ma.masked_equal(panel["prediction"].T, 0)
            pred_ax[j].imshow(pred, origin="lower", alpha=0.8, **style)
            dice = (summary.get((model, entry.key)) or {}).get("dice_fg")
            title = entry.label if dice is None else f"{entry.label}\nDice {dice:.3f}"
            image_ax[j].set_title(title, fontsize=8)
    index = next(int(p["index"]) for p in panels.values())
    fig.suptitle(f"{case}: axial slice {index} (model grid)", fontsize=10)
    fig.tight_layout()
    return save_png(fig, Path(out_dir) / "qualitative.png")


# ----------------------------------------------------------------------------- report.md
def write_report(
    out_dir: str | os.PathLike,
    rows: Sequence[Mapping[str, Any]],
    models: Sequence[tuple[str, str]],
    cases: Sequence[tuple[str, Path, Path | None]],
    settings: ReportSettings,
) -> dict[str, Path]:
    """Write ``report.md`` and the plots from result rows (e.g. :func:`read_results`).

    Args:
        out_dir: the report folder (holds ``slices/`` for the qualitative figure).
        rows: result rows (one per model × case × entry).
        models: ``(name, description)`` in report order.
        cases: ``(name, image path, labels path or None)``; the first is the figure's case.
        settings: how the grid was run.

    Returns:
        ``{"report": path, <plot>: path, …}``. Every file is written atomically.
    """
    out_dir = Path(out_dir)
    names = [m[0] for m in models]
    sweep_models = names if settings.sweep_models == "all" else names[:1]
    plots = _write_plots(out_dir, rows, names, sweep_models, cases, settings)
    text = _markdown(rows, models, sweep_models, cases, settings, plots)
    path = out_dir / REPORT_MD
    _atomic_write(path, text.encode("utf-8"))
    return {"report": path, **plots}


def _markdown(rows, models, sweep_models, cases, settings, plots) -> str:
    from vafa.attacks.vafa import PAPER_SETTINGS

    names = [m[0] for m in models]
    table1 = table1_grid(quick=settings.quick, paper=settings.paper)
    sweeps = sweep_grid(quick=settings.quick, paper=settings.paper)
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    vafa_mode = {**PAPER_SETTINGS, "q_min": 5} if settings.paper else LIBRARY_VAFA
    mode = "published code (`--paper`)" if settings.paper else "library defaults"
    out = [
        "# VAFA robustness report",
        "",
        f"Date: {date}. Grid: {'quick' if settings.quick else 'full'} "
        f"({QUICK_STEPS if settings.quick else FULL_STEPS} steps for PGD/BIM/VAFA unless swept), "
        f"seed {settings.seed}, device {settings.device}.",
        "",
        f"**VAFA settings: {mode}** — "
        + ", ".join(f"{k}={v}" for k, v in vafa_mode.items())
        + "; 32³ blocks (VAFA-2D: 32² per axial slice), SSIM term on for VAFA (off for VAFA-2D). "
        "Voxel attacks: budgets in [0, 255] units, α = 0.01. "
        + (
            "These are the published code's choices, so the numbers can be set beside the paper's."
            if settings.paper
            else "`normalize=clip` measures the frequency perturbation alone; `--paper` switches "
            "to the published per-slice normalisation and last iterate."
        ),
        "",
        "**Data**:",
    ]
    from vafa.data import sample_paths

    sample = Path(sample_paths()[0]).resolve()
    for name, image, labels in cases:
        reference = (
            f"labels `{labels}`" if labels else "no labels: Dice against the clean prediction"
        )
        if Path(image).resolve() == sample:
            reference += "; the bundled CT sample, whose labels are TotalSegmentator's output"
        out.append(f"- `{name}`: `{image}` ({reference})")
    out += ["", "**Models**:"]
    out += [f"- `{name}`: {text}" for name, text in models]
    out += [
        "",
        "Protocol: the whole volume is attacked in roi-sized tiles and evaluated by "
        "sliding-window inference (overlap 0.5) on the model grid (`vafa.pipeline.run_attack`). "
        "Dice fg: mean over the foreground classes present in the reference; DSC: over all "
        "classes including background (the paper's DSC); HD95 in mm; SSIM, PSNR and L∞ ([0, 1] "
        "units) between the clean and the attacked model input. Values are means over cases. "
        + (
            "LPIPS: AlexNet LPIPS (local weights) between the clean and the attacked model "
            "input, mean over axial slices (`vafa.lpips`)."
            if settings.lpips
            else "LPIPS (column `lpips` of results.csv) is empty: give `--lpips-weights` (local "
            "AlexNet and LPIPS weights; nothing is downloaded) to fill it."
        ),
        "",
        "## Trends observed",
        "",
        *_trends(rows, names, sweep_models, table1, sweeps, settings),
        "",
        "The paper (UNETR, Synapse, 12 volumes, published settings): clean DSC 74.3; PGD ε4 62.7; "
        "FGSM ε4 62.8; BIM ε4 62.8; GN σ4 74.2; VAFA-2D 61.7; VAFA q_max 20: 32.2, q_max 30: 29.8; "
        "DSC falls as q_max (10→80: 66.0→48.8), steps and block size (4→96: 63.5→28.1) grow.",
        "",
        "## Table 1/5: attacks",
        "",
    ]
    lpips = ("lpips",) if settings.lpips or any(r.get("lpips") is not None for r in rows) else ()
    metrics = ("dice_fg", "dice", "hd95", "ssim", "psnr", "linf", *lpips)
    for name in names:
        out += [f"### {name}", "", format_table(rows, table1, [name], metrics=metrics), ""]
    if "table1_bars" in plots:
        out += ["![Table 1 bars](table1_bars.png)", ""]
    if settings.sweeps:
        for table, (title, _, filename) in SWEEP_TITLES.items():
            entries = [e for e in sweeps if e.table == table]
            out += [f"## {title}", ""]
            out += [
                format_table(
                    rows,
                    entries,
                    sweep_models,
                    metrics=("dice_fg", "dice", "ssim", *lpips),
                    setting_header="setting",
                ),
                "",
            ]
            if table in plots:
                out += [f"![{title}]({filename})", ""]
    out += [
        "## Table 6: every model under every attack",
        "",
        "Foreground Dice and DSC of each model (columns) under each Table-1 attack (rows).",
        "",
        format_table(rows, table1, names, metrics=("dice_fg", "dice")),
        "",
    ]
    if "qualitative" in plots:
        out += [
            "## Qualitative (Fig. 2)",
            "",
            f"Case `{cases[0][0]}`, middle axial slice of the labelled extent: the attacked "
            "image and the prediction over it, per attack.",
            "",
            "![qualitative](qualitative.png)",
            "",
        ]
    failed = [r for r in rows if r["status"] != "ok"]
    if failed:
        out += ["## Entries that did not finish", ""]
        out += [f"- {r['model']} / {r['case']} / {r['key']}: {r['status']}" for r in failed]
        out += ["", "Re-run the same command to retry them (finished entries are skipped).", ""]
    return "\n".join(out) + "\n"


def _trends(rows, names, sweep_models, table1, sweeps, settings) -> list[str]:
    """Sentences read off the numbers (directions as measured, never assumed)."""
    summary = summarize(rows)

    def get(model, key, metric="dice_fg"):
        return (summary.get((model, key)) or {}).get(metric)

    lines = []
    by_label = {e.label: e.key for e in table1}
    for model in names:
        clean = get(model, "clean")
        attacked = [(get(model, e.key), e) for e in table1 if e.attack != "clean"]
        attacked = [(v, e) for v, e in attacked if v is not None]
        if clean is None or not attacked:
            continue
        worst, entry = min(attacked, key=lambda t: t[0])
        ssim = get(model, entry.key, "ssim")
        line = (
            f"- `{model}`: clean Dice fg {clean:.3f}; the strongest attack is {entry.label} "
            f"({worst:.3f}, SSIM {_fmt(ssim)})."
        )
        vafa, pgd = by_label.get("VAFA q_max=20"), by_label.get("PGD ε=4")
        if vafa and pgd and get(model, vafa) is not None and get(model, pgd) is not None:
            stronger = "stronger" if get(model, vafa) < get(model, pgd) else "weaker"
            line += (
                f" VAFA q_max 20 ({get(model, vafa):.3f}, SSIM {_fmt(get(model, vafa, 'ssim'))}) "
                f"is {stronger} than PGD ε 4 ({get(model, pgd):.3f}, SSIM "
                f"{_fmt(get(model, pgd, 'ssim'))})."
            )
        lines.append(line)
    if settings.sweeps:
        for table, (title, _, _) in SWEEP_TITLES.items():
            xlabel = {"qmax": "q_max", "steps": "steps", "block": "block size"}[table]
            points = sorted((_sweep_value(e, table), e.key) for e in sweeps if e.table == table)
            for model in sweep_models:
                values = [(x, get(model, k)) for x, k in points if get(model, k) is not None]
                if len(values) < 2:
                    continue
                dice = [v for _, v in values]
                direction = "falls" if dice[-1] < dice[0] else "does not fall"
                monotone = all(b <= a + 1e-9 for a, b in itertools.pairwise(dice))
                lines.append(
                    f"- {title.split(':')[0]}, `{model}`: Dice fg {direction} with {xlabel} "
                    f"({_format_option(values[0][0])} → {_format_option(values[-1][0])}: "
                    f"{dice[0]:.3f} → {dice[-1]:.3f}"
                    f"{', monotonically' if monotone else ', not monotonically'})."
                )
    vafa = by_label.get("VAFA q_max=20")
    measured = [(m, get(m, "clean"), get(m, vafa)) for m in names] if vafa else []
    measured = [(m, c, v) for m, c, v in measured if c is not None and v is not None]
    if len(measured) > 1:
        drops = ", ".join(f"`{m}` {c:.3f} → {v:.3f} ({v - c:+.3f})" for m, c, v in measured)
        most = max(measured, key=lambda t: t[2] - t[1])[0]
        lines.append(f"- Table 6: under VAFA q_max 20, {drops}; `{most}` loses the least Dice fg.")
    return lines or ["- (no finished entries)"]


def _fmt(value) -> str:
    return "–" if value is None else f"{value:.3f}"


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.partial")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
