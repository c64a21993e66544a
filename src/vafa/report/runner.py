"""Running a report: one grid on one model × one case (:func:`iter_grid`, a generator of
:class:`GridProgress` events), and models × cases into a report folder (:func:`run_report`)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from vafa.ops.amp import amp_dtype, with_amp
from vafa.ops.messages import one_line
from vafa.report.grid import GridEntry, ReportSettings, table1_grid, unique_entries
from vafa.report.markdown import write_report
from vafa.report.render import format_table
from vafa.report.results import (
    RESULT_FIELDS,
    RESULTS_CSV,
    ResultsWriter,
    read_results,
    rows_in_scope,
    save_slice,
)
from vafa.report.shards import ReportShards
from vafa.run.outcome_metrics import OutcomeMetrics


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
    from vafa.run.pipeline import evaluate, iter_run_attack

    model = with_amp(model, amp)
    skip = set(skip)
    todo = [e for e in unique_entries(entries) if e.key not in skip]
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
                if on_outcome is not None and row["status"] == "ok":
                    on_outcome(entry, outcome)
        except Exception as err:  # one failing entry must not stop the grid
            row["status"] = f"failed: {one_line(err)}"
        row["seconds"] = round(time.perf_counter() - start, 2)
        rows.append(row)
        if stopped:
            break
        if (yield progress(row=row)) is False:
            break
    return rows


def _lpips_of(metric, outcome) -> float | None:
    """LPIPS between the clean and the attacked model input (None: slices too small)."""

    from vafa.io.lpips import MIN_SLICE, volume_lpips

    clean = outcome.model_input.tensor
    if min(clean.shape[2:4]) < MIN_SLICE:
        return None
    return float(volume_lpips(metric, clean, outcome.adversarial01)[0])


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
        from vafa.run.pipeline import labels_to_model_space, to_model_space

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
        from vafa.run.pipeline import PREDICTION_OVERLAP
        from vafa.run.tiling import sliding_window_labels

        tensor = self.input.tensor
        pred = sliding_window_labels(
            self.model, tensor, self.card.roi_size, overlap=PREDICTION_OVERLAP
        )
        out = self._pack(tensor[0, 0].numpy(), pred[0, 0].cpu().numpy())
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


# ----------------------------------------------------------------------------- many grids
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
        transfer: the transfer matrix as Markdown ("" with one model).
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
    transfer: str = ""


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
    bands: bool = False,
    band_block: int = 32,
    amp: str = "off",
    dist=None,
) -> ReportResult:
    """Run the report grid on every model × case and write the report into ``out_dir``.

    Args:
        models: ``(name, weights)``: a path (card beside it) or a bundled model name
            (:data:`vafa.io.data.BUNDLED_MODELS`). Names must be unique.
        cases: ``(name, image, labels or None)`` NIfTI paths. Names must be unique; the first
            case is the one of the qualitative figure.
        out_dir: the report folder (created). Writes ``results.csv`` (one row per model ×
            case × entry, appended and flushed row by row), ``report.md``, ``dice_vs_qmax.png``,
            ``dice_vs_steps.png``, ``dice_vs_block.png``, ``table1_bars.png``,
            ``qualitative.png`` and ``slices/`` (the figure's slices, kept for resumed runs).
        quick, paper, sweeps, sweep_models: see :class:`ReportSettings`.
        device: where the models run. seed: seed of every attack.
        trust: allow pickled checkpoints (:func:`vafa.io.checkpoints.load_model`), LPIPS weight
            files included.
        lpips_weights: local LPIPS/AlexNet weight file(s) (:func:`vafa.io.lpips.load_lpips`):
            fills the ``lpips`` column of the entries run now.
        callback: receives every :class:`GridProgress`; returning False cancels (the rows done
            stay in ``results.csv``; no report is written).
        bands: run the perturbation band analysis (:mod:`vafa.run.band_analysis`, blocks of
            ``band_block``) of every Table-1 attack entry: ``bands.csv``, a table and
            ``bands.png``. With two or more models, every Table-1 attack's adversarial volume
            is also scored on every model: ``transfer.csv``, the transfer matrix and
            ``transfer.png`` (:mod:`vafa.report.transfer`).
        amp: mixed precision of the model passes (see :func:`iter_grid`).
        dist: a :class:`vafa.run.distributed.Dist` of a ``torchrun`` job: this process runs
            only its model × case × entry items and rank 0 merges the rows and writes the
            report (:mod:`vafa.report.shards`); None or one process: everything here.

    Resuming: entries whose ``(model, case, key)`` already has an ``ok`` row in
    ``results.csv`` are skipped. A case that cannot be loaded and an entry that fails are
    recorded as ``failed`` rows; the rest continue (re-running retries them).

    Raises:
        ValueError, TypeError, FileNotFoundError: bad names, missing files, models or LPIPS
            weights that do not load, a ``results.csv`` with other columns — all before
            anything is written.
    """
    from vafa.io.handle import ModelSource

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
    amp_dtype(amp)  # checks amp
    shards = ReportShards(out_dir, dist)
    previous += shards.previous_rows()
    loaded = []
    for name, weights in models:
        source = ModelSource(str(weights), trust=trust)
        model, card = source.load(device=device)
        loaded.append((name, source.path, model, card))
    metric = None
    if lpips_weights is not None:
        from vafa.io.lpips import load_lpips
        from vafa.ops.devices import resolve_device

        metric = load_lpips(lpips_weights, device=resolve_device(device), trust=trust)

    done = {(r["model"], r["case"], r["key"]) for r in previous if r["status"] == "ok"}
    recorders = _recorders(out_dir, loaded, settings, bands, band_block)
    if shards.active and recorders:  # they append to one file: not shared out yet
        raise ValueError(
            "the transfer matrix (two or more models) and the band analysis run in one process "
            f"only: run this report without torchrun, got {dist.world_size} processes"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    result = ReportResult(out_dir=out_dir, results_csv=csv_path)
    with ResultsWriter(shards.results_path()) as writer:
        for m, (name, _, model, card) in enumerate(loaded):
            entries = settings.grid(m)
            for c, (case, (image_path, labels_path)) in enumerate(
                zip(case_names, case_paths, strict=True)
            ):
                skip = {
                    e.key
                    for e in entries
                    if (name, case, e.key) in done
                    and not any(r.missing(name, case, e.key) for r in recorders)
                }
                others = shards.others(entries)
                result.skipped += len(skip - others)
                skip |= others
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
                    on_outcome=partial(_record, recorders, name, case, image, labels),
                    amp=amp,
                )
                for event in _drive_events(gen, callback, result):
                    if event.row is not None:
                        save_slice(out_dir, event.row)
                        writer.write(event.row)
                        result.ran += 1
                        result.failed += event.row["status"].startswith("failed")
                if result.cancelled:
                    break
            if result.cancelled:
                break
    shards.finish(result)
    result.rows = rows_in_scope(read_results(csv_path), model_names, case_names)
    if result.cancelled or not shards.writes_report:
        return result
    described = [(name, _describe_model(path, card)) for name, path, _, card in loaded]
    described_cases = [
        (case, image, labels) for case, (image, labels) in zip(case_names, case_paths, strict=True)
    ]
    extras = {type(r).__name__: r.in_scope(model_names, case_names) for r in recorders}
    paths = write_report(
        out_dir,
        result.rows,
        described,
        described_cases,
        settings,
        transfer_rows=extras.get("TransferRecorder"),
        band_rows=extras.get("BandRecorder"),
    )
    result.report = paths.pop("report")
    result.plots = paths
    result.table6 = format_table(
        result.rows, table1_grid(quick=quick, paper=paper), model_names, metrics=("dice_fg", "dice")
    )
    if extras.get("TransferRecorder"):
        from vafa.report.transfer import transfer_markdown

        result.transfer = transfer_markdown(extras["TransferRecorder"], model_names)
    return result


def _recorders(out_dir: Path, loaded, settings: ReportSettings, bands: bool, band_block: int):
    """The transfer recorder (two or more models) and the band recorder (``bands``), for the
    Table-1 attack entries."""
    from vafa.report.bands import BandRecorder
    from vafa.report.transfer import TransferRecorder

    if isinstance(band_block, bool) or not isinstance(band_block, int) or band_block < 1:
        raise ValueError(f"band_block must be a positive int, got {band_block!r}")
    table1 = table1_grid(quick=settings.quick, paper=settings.paper)
    keys = [e.key for e in table1 if e.attack != "clean"]
    out: list[Any] = []
    if len(loaded) > 1:
        out.append(TransferRecorder(out_dir, [(n, m, c) for n, _, m, c in loaded], keys))
    if bands:
        out.append(BandRecorder(out_dir, {n: m for n, _, m, _ in loaded}, keys, band_block))
    return out


def _record(recorders, model: str, case: str, image, labels, entry, outcome) -> None:
    for recorder in recorders:
        recorder.record(model, case, entry, outcome, image, labels)


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
    from vafa.io.volume import load_labels, load_volume

    image = load_volume(image_path)
    labels = None if labels_path is None else load_labels(labels_path, image, card.out_channels)
    return image, labels


def _case_failure(model: str, case: str, err: BaseException, seed: int) -> dict[str, Any]:
    row = _base_row(GridEntry("", "", {}, ""), model, case, seed)
    row.update(key="case", options="{}", status=f"failed: {one_line(err)}")
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
