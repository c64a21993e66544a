"""Background work of the attack widget: a plain generator (no Qt) that napari runs in a thread.

:func:`run_job` loads the model, iterates :func:`vafa.run.pipeline.iter_run_attack` and yields one
:class:`Progress` per attack step. Everything heavy happens here, off the GUI thread: the live
preview tile is cut, mapped back to the image's units and transposed to napari's ``(k, j, i)``
order at most every ``preview_interval`` seconds (the GUI only pastes it), and after the attack
all result layers (DCT log-magnitudes, zeroed-coefficient mask, …) are computed here too.

Cancelling: the GUI sets a :class:`threading.Event`; at the next step the generator sends
``False`` into the attack, which stops within one step and returns the best result so far.
Errors never escape: the generator *returns* a :class:`JobFailed` (a worker's exception would
otherwise be relayed twice, and Qt workers turn a ``RuntimeError`` into a mere warning).
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_vafa._layer_data import (
    display_block_size,
    display_limits,
    result_layer_data,
    seen_by_model,
)

if TYPE_CHECKING:
    from vafa.attacks.base import StepEvent
    from vafa.io.channels import Channels
    from vafa.io.models import ModelCard
    from vafa.io.volume import Volume
    from vafa.run.history import StepHistory
    from vafa.run.pipeline import AttackOutcome

__all__ = [
    "RESULT_LAYERS",
    "AttackJob",
    "JobCancelled",
    "JobDone",
    "JobFailed",
    "ModelCache",
    "ModelSpec",
    "Progress",
    "TilePreview",
    "load_in_worker",
    "run_job",
]

#: Result layers: key → layer name (the names users see in napari).
RESULT_LAYERS = {
    "adversarial": "adversarial",
    "perturbation": "perturbation",
    "clean_prediction": "clean prediction",
    "adversarial_prediction": "adversarial prediction",
    "dct_clean": "DCT log|c| clean",
    "dct_adversarial": "DCT log|c| adversarial",
    "q_table": "quantization table",
    "zeroed": "zeroed coefficients",
}


@dataclass(frozen=True)
class ModelSpec:
    """Which model to use: a bundled model, or weights (+ optional card) on disk.

    Attributes:
        source: a name of :data:`vafa.io.data.BUNDLED_MODELS` (``"demo"``, ``"robust-demo"``)
            or ``"file"``.
        card: with ``"file"``: a card file, a preset name, or None (the card beside the
            weights).
        fold, checkpoint: an nnU-Net result folder's, as the CLI's ``--fold``/``--checkpoint``
            (:class:`~vafa.io.handle.ModelSource`); None: the library's default.
    """

    source: str = "demo"
    weights: Path | None = None
    card: Path | str | None = None  # a card file, or a preset name
    device: str = "auto"
    fold: str | None = None
    checkpoint: str | None = None

    def handle(self):
        """The library's :class:`~vafa.io.handle.ModelSource` of this choice."""
        from vafa.io.handle import ModelSource

        if self.source != "file":
            return ModelSource(self.source)
        if self.weights is None:
            raise ValueError("choose a weights file (or a bundled model)")
        return ModelSource(self.weights, card=self.card, fold=self.fold, checkpoint=self.checkpoint)

    def describe(self) -> str:
        if self.source != "file":
            return f"bundled {self.source} model"
        parts = [f"{k} {v}" for k, v in (("fold", self.fold), ("checkpoint", self.checkpoint)) if v]
        return f"{self.weights} ({', '.join(parts)})" if parts else str(self.weights)


@dataclass
class AttackJob:
    """Everything one attack run needs (built on the GUI thread, used in the worker).

    Attributes:
        image: the volume to attack, in file units (``(i, j, k)`` order, its own affine); a
            :class:`~vafa.io.channels.Channels` for a multi-channel model.
        labels: ground truth on the image's grid, or None (attack the model's prediction).
        model: the model to load.
        attack: ``"vafa"``, ``"vafa2d"``, ``"pgd"``, ``"fgsm"``, ``"bim"`` or ``"gn"``.
        options: the attack's hyper-parameters.
        seed: seed of the attack.
        threads: ``torch.set_num_threads`` in the worker thread (the GUI thread's count; a new
            thread may default to another number); None leaves it alone.
        preview_interval: least seconds between two live previews of the adversarial tile.
        through: the threat model, ``"tiles"`` or ``"sliding-window"``
            (:mod:`vafa.run.through`).
    """

    image: Volume | Channels
    labels: Volume | None
    model: ModelSpec
    attack: str = "vafa"
    options: dict[str, Any] = field(default_factory=dict)
    seed: int | None = 0
    threads: int | None = None
    preview_interval: float = 0.4
    through: str = "tiles"


@dataclass
class TilePreview:
    """The current adversarial tile, ready to paste: ``layer.data[region] = data``."""

    region: tuple[slice, slice, slice]
    data: np.ndarray


@dataclass
class Progress:
    """One attack step, as the GUI thread receives it."""

    step: int
    total: int
    loss: float
    dice: float
    ssim: float | None
    tile: int
    tiles: int
    elapsed: float
    preview: TilePreview | None = None


@dataclass
class JobDone:
    """A finished (possibly cancelled) run.

    Attributes:
        outcome: the :class:`vafa.run.pipeline.AttackOutcome`.
        layers: data of the result layers (keys of :data:`RESULT_LAYERS`), ``(k, j, i)``.
        limits: contrast limits of the image result layers: ``{key: (low, high)}`` and, for
            the perturbation, ``"perturbation_range"`` (±max, so that users can widen).
        block_size: block size of the DCT pictures.
        notes: remarks for the user (e.g. a layer that could not be made).
        timings: seconds spent loading the model, attacking, making the layers.
        history: the run step by step (:class:`vafa.run.history.StepHistory`, model grid =
            image grid), or None when the image was resampled for the model.
    """

    outcome: AttackOutcome
    layers: dict[str, np.ndarray]
    limits: dict[str, tuple[float, float]]
    block_size: tuple[int, ...]
    notes: list[str]
    timings: dict[str, float]
    history: StepHistory | None = None

    @property
    def class_names(self) -> list[str]:
        return list(self.outcome.settings.get("class_names") or [])


@dataclass
class JobFailed:
    """A run that raised: a one-line message for the notification, and the traceback."""

    error: BaseException
    message: str
    traceback: str

    @classmethod
    def from_exception(cls, err: BaseException) -> JobFailed:
        """Call inside the ``except`` block (the traceback is the one being handled)."""
        return cls(err, _message(err), traceback.format_exc())


@dataclass
class JobCancelled:
    """Cancelled before the attack produced anything (e.g. while the model was loading)."""

    timings: dict[str, float] = field(default_factory=dict)


class ModelCache:
    """The last loaded model, so that re-runs with the same model do not reload it.

    Attributes:
        in_use: held by a job while it runs the model (an attack sets the model's training
            flag and ``requires_grad`` and puts them back: two jobs at once would mix them up).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.in_use = threading.Lock()
        self._key: ModelSpec | None = None
        self._value: tuple[Any, ModelCard] | None = None

    def get(self, spec: ModelSpec) -> tuple[Any, ModelCard]:
        with self._lock:
            if self._key == spec and self._value is not None:
                return self._value
        value = _load_model(spec)
        with self._lock:
            self._key, self._value = spec, value
        return value

    def card(self, spec: ModelSpec) -> ModelCard | None:
        """The card of ``spec`` when it is the loaded model, else None (nothing is loaded)."""
        with self._lock:
            if self._key == spec and self._value is not None:
                return self._value[1]
        return None

    def put(self, spec: ModelSpec, model, card: ModelCard) -> None:
        """Use an already loaded ``(model, card)`` for ``spec`` (tests, benchmarks)."""
        with self._lock:
            self._key, self._value = spec, (model, card)

    def clear(self) -> None:
        with self._lock:
            self._key = self._value = None


def run_job(
    job: AttackJob, cancel: threading.Event, cache: ModelCache | None = None
) -> Generator[Progress, Any, JobDone | JobFailed | JobCancelled]:
    """Run one attack: yields a :class:`Progress` per step, returns the result (never raises).

    Args:
        job: what to run.
        cancel: set it to stop after the current step (the best result so far is returned).
        cache: model cache shared across runs (None: load every time).
    """
    timings: dict[str, float] = {}
    cache = cache or ModelCache()
    try:
        model, card = load_in_worker(job.threads, cache.get, job.model, timings)
        with cache.in_use:
            if cancel.is_set():
                return JobCancelled(timings)
            start = time.perf_counter()
            outcome, history = yield from _attack(job, model, card, cancel, start)
            timings["attack"] = time.perf_counter() - start
        start = time.perf_counter()
        block = display_block_size(outcome)
        layers, notes = result_layer_data(outcome, block)
        limits = display_limits(layers, seen_by_model(outcome))
        if history is not None:
            history.set_clean_prediction(np.transpose(layers["clean_prediction"], (2, 1, 0)))
        timings["layers"] = time.perf_counter() - start
        return JobDone(outcome, layers, limits, block, notes, timings, history)
    except Exception as err:  # every failure becomes a notification, never a crash
        return JobFailed.from_exception(err)


def load_in_worker(threads: int | None, load, spec: ModelSpec, timings: dict[str, float]):
    """Worker-thread set-up shared by the plugin's jobs: the GUI's torch thread count (a new
    thread may default to another), then ``load(spec)`` timed into ``timings["load"]``."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    start = time.perf_counter()
    value = load(spec)
    timings["load"] = time.perf_counter() - start
    return value


def _attack(job: AttackJob, model, card, cancel: threading.Event, start: float):
    from vafa.run.pipeline import iter_run_attack
    from vafa.run.progress import relay

    whole = job.through != "tiles"  # through the sliding window: one piece, the whole volume
    previewer = _Previewer(job.image, card, job.preview_interval, whole)
    steps = iter_run_attack(
        model,
        card,
        job.image,
        job.labels,
        attack=job.attack,
        options=job.options,
        device=job.model.device,
        seed=job.seed,
        resample_back=True,
        through=job.through,
    )
    history = previewer.history(job.attack, _steps_of(job.attack, job.options))
    if history is not None:
        steps = history.recording(steps)

    def progress(event: StepEvent) -> Progress:
        return Progress(
            step=event.step,
            total=event.total,
            loss=event.loss,
            dice=event.dice,
            ssim=event.ssim,
            tile=event.tile or 1,
            tiles=event.tiles or 1,
            elapsed=time.perf_counter() - start,
            preview=previewer.offer(event),
        )

    return (yield from relay(steps, progress, cancel=cancel)), history


class _Previewer:
    """Cuts the current adversarial tile out of step events, at most every ``interval`` s.

    Only when the image is already on the model's grid (no resampling): the tile then maps
    voxel for voxel onto the image layer. A multi-channel image previews its channel 0 (the
    "adversarial" layer); its step history holds every channel.
    """

    def __init__(
        self, image: Volume | Channels, card: ModelCard, interval: float, whole: bool
    ) -> None:
        from vafa.io.channels import channel_volumes
        from vafa.io.intensity import fit_windows
        from vafa.io.model_space import grid_differs
        from vafa.run.tiles import tile_grid

        self.interval = interval
        self.last = -np.inf
        self.enabled = not grid_differs(image, card)
        self.merge = card.heads().merge  # what the scrubber shows: one class map per step
        if self.enabled:  # the attack's pieces: the card's tiles, or the ``whole`` volume
            self.roi = tuple(image.shape) if whole else tuple(card.roi_size)
            self.tiles = tile_grid(image.shape, self.roi)
            # each channel's values and window, as the run's model input maps them
            self.arrays = [volume.array for volume in channel_volumes(image)]
            self.windows = fit_windows(card.intensity, self.arrays, True).windows
            self.shown, self.mapping = self.arrays[0], self.windows[0]  # what previews show

    def history(self, attack: str, steps: int) -> StepHistory | None:
        """A step history of the run on the image's grid, every channel (None: the image is
        resampled for the model)."""
        import torch

        from vafa.run.history import StepHistory

        if not self.enabled:
            return None
        clean01 = torch.empty((1, len(self.arrays), *self.arrays[0].shape))  # channel by channel
        for c, (window, array) in enumerate(zip(self.windows, self.arrays, strict=True)):
            clean01[0, c] = torch.from_numpy(window.forward(array))
        return StepHistory(
            clean01, steps, tiles=self.tiles, roi=self.roi, with_tables=attack.startswith("vafa"),
            merge=self.merge,
        )  # fmt: skip

    def offer(self, event) -> TilePreview | None:
        from vafa.run.tiles import crop_tile

        now = time.perf_counter()
        if not self.enabled or now - self.last < self.interval:
            return None
        index = (event.tile or 1) - 1
        if index >= len(self.tiles) or event.adversarial.shape[0] != 1:
            return None  # tile batches: no single tile to show
        self.last = now
        sl = self.tiles[index]
        tile01 = crop_tile(event.adversarial[0, 0], sl, self.roi).detach().float().cpu().numpy()
        units = self.mapping.inverse(tile01, self.shown[sl])
        region = (sl[2], sl[1], sl[0])
        return TilePreview(region, np.ascontiguousarray(units.transpose(2, 1, 0), np.float32))


def _steps_of(attack: str, options: dict[str, Any]) -> int:
    """The steps ``attack`` runs with ``options`` (its schema's default when not given)."""
    from vafa.attacks import attack_class

    if options.get("steps") is not None:
        return int(options["steps"])
    defaults = {o.name: o.default for o in attack_class(attack).options}
    return int(defaults.get("steps") or 0)


def _load_model(spec: ModelSpec):
    return spec.handle().load(device=spec.device)


def _message(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    if isinstance(err, FileNotFoundError) and err.filename:
        text = f"file not found: {err.filename}"
    first = text.splitlines()[0]
    return first if len(first) <= 300 else first[:297] + "…"
