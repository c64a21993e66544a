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

if TYPE_CHECKING:
    from vafa.io.models import ModelCard
    from vafa.io.volume import Volume
    from vafa.run.history import StepHistory
    from vafa.run.pipeline import AttackOutcome

__all__ = [
    "DISPLAY_BLOCK",
    "RESULT_LAYERS",
    "AttackJob",
    "JobCancelled",
    "JobDone",
    "JobFailed",
    "ModelCache",
    "ModelSpec",
    "Progress",
    "TilePreview",
    "display_limits",
    "load_in_worker",
    "result_layer_data",
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
#: Block size of the DCT pictures for attacks without blocks (voxel attacks).
DISPLAY_BLOCK = 32


@dataclass(frozen=True)
class ModelSpec:
    """Which model to use: a bundled model, or weights (+ optional card) on disk.

    Attributes:
        source: a name of :data:`vafa.io.data.BUNDLED_MODELS` (``"demo"``, ``"robust-demo"``)
            or ``"file"``.
        card: with ``"file"``: a card file, a preset name, or None (the card beside the
            weights).
    """

    source: str = "demo"
    weights: Path | None = None
    card: Path | str | None = None  # a card file, or a preset name
    device: str = "auto"

    def handle(self):
        """The library's :class:`~vafa.io.handle.ModelSource` of this choice."""
        from vafa.io.handle import ModelSource

        if self.source != "file":
            return ModelSource(self.source)
        if self.weights is None:
            raise ValueError("choose a weights file (or a bundled model)")
        return ModelSource(self.weights, card=self.card)

    def describe(self) -> str:
        return f"bundled {self.source} model" if self.source != "file" else str(self.weights)


@dataclass
class AttackJob:
    """Everything one attack run needs (built on the GUI thread, used in the worker).

    Attributes:
        image: the volume to attack, in file units (``(i, j, k)`` order, its own affine).
        labels: ground truth on the image's grid, or None (attack the model's prediction).
        model: the model to load.
        attack: ``"vafa"``, ``"vafa2d"``, ``"pgd"``, ``"fgsm"``, ``"bim"`` or ``"gn"``.
        options: the attack's hyper-parameters.
        seed: seed of the attack.
        threads: ``torch.set_num_threads`` in the worker thread (the GUI thread's count; a new
            thread may default to another number); None leaves it alone.
        preview_interval: least seconds between two live previews of the adversarial tile.
    """

    image: Volume
    labels: Volume | None
    model: ModelSpec
    attack: str = "vafa"
    options: dict[str, Any] = field(default_factory=dict)
    seed: int | None = 0
    threads: int | None = None
    preview_interval: float = 0.4


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
        block = _block_size(outcome)
        layers, notes = result_layer_data(outcome, block)
        limits = display_limits(layers, _seen_by_model(outcome))
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

    previewer = _Previewer(job.image, card, job.preview_interval)
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
    )
    history = previewer.history(job.attack, _steps_of(job.attack, job.options))
    if history is not None:
        steps = history.recording(steps)
    try:
        event = next(steps)
        while True:
            yield Progress(
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
            event = steps.send(False if cancel.is_set() else None)
    except StopIteration as stop:
        return stop.value, history


class _Previewer:
    """Cuts the current adversarial tile out of step events, at most every ``interval`` s.

    Only when the image is already on the model's grid (no resampling): the tile then maps
    voxel for voxel onto the image layer.
    """

    def __init__(self, image: Volume, card: ModelCard, interval: float) -> None:
        from vafa.io.intensity import mapping_from_dict
        from vafa.run.tiling import tile_grid

        self.image = image
        self.interval = interval
        self.last = -np.inf
        self.enabled = _same_grid(image, card)
        if self.enabled:
            self.roi = tuple(card.roi_size)
            self.tiles = tile_grid(image.shape, self.roi)
            self.mapping = mapping_from_dict(card.intensity).fit(image.array)

    def history(self, attack: str, steps: int) -> StepHistory | None:
        """A step history of the run on the image's grid (None: the image is resampled)."""
        import torch

        from vafa.run.history import StepHistory

        if not self.enabled:
            return None
        clean01 = torch.from_numpy(self.mapping.forward(self.image.array))[None, None]
        return StepHistory(
            clean01, steps, tiles=self.tiles, roi=self.roi, with_tables=attack.startswith("vafa")
        )

    def offer(self, event) -> TilePreview | None:
        from vafa.run.tiling import crop_tile

        now = time.perf_counter()
        if not self.enabled or now - self.last < self.interval:
            return None
        index = (event.tile or 1) - 1
        if index >= len(self.tiles) or event.adversarial.shape[0] != 1:
            return None  # tile batches: no single tile to show
        self.last = now
        sl = self.tiles[index]
        tile01 = crop_tile(event.adversarial[0, 0], sl, self.roi).detach().float().cpu().numpy()
        units = self.mapping.inverse(tile01, self.image.array[sl])
        region = (sl[2], sl[1], sl[0])
        return TilePreview(region, np.ascontiguousarray(units.transpose(2, 1, 0), np.float32))


def result_layer_data(
    outcome: AttackOutcome, block_size: tuple[int, ...]
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Data of every result layer (keys of :data:`RESULT_LAYERS`) in napari's ``(k, j, i)``.

    Volumes are on the image's grid (``resample_back=True``). The DCT pictures use
    ``block_size``; the zeroed-coefficient mask needs the attack's own grid and is left out
    (with a note) when the image was resampled for the model.
    """
    from vafa.report.figures import dct_pictures

    def kji(array: np.ndarray, dtype) -> np.ndarray:
        return np.ascontiguousarray(np.transpose(array, (2, 1, 0)), dtype=dtype)

    model_input = outcome.model_input
    notes: list[str] = []
    layers = {
        "adversarial": kji(outcome.adversarial.array, np.float32),
        "perturbation": kji(outcome.perturbation.array, np.float32),
        "clean_prediction": kji(outcome.clean_prediction.array, _label_dtype(outcome)),
        "adversarial_prediction": kji(outcome.adversarial_prediction.array, _label_dtype(outcome)),
    }
    dct_clean, dct_adversarial = dct_pictures(outcome, block_size)
    layers["dct_clean"] = kji(dct_clean, np.float32)
    layers["dct_adversarial"] = kji(dct_adversarial, np.float32)
    if outcome.q_table is not None:
        layers["q_table"] = kji(outcome.q_table.array, np.float32)
        band = (outcome.settings.get("attack") or {}).get("bands", "all")
        if band != "all":
            notes.append(
                f"quantization table: only the {band} DCT band was quantized; the other "
                "coefficients (q = 0) are shown grey"
            )
        if model_input.resampled:
            notes.append("zeroed-coefficient mask not shown: the image was resampled")
        else:
            layers["zeroed"] = kji(_zeroed(outcome, block_size), np.uint8)
    return layers, notes


def display_limits(
    layers: dict[str, np.ndarray], seen: np.ndarray | None = None
) -> dict[str, tuple[float, float]]:
    """Contrast limits of the image result layers (computed here, off the GUI thread).

    * perturbation: centred on 0, ±(99.5th percentile of |change| over the changed voxels
      inside the model's intensity window, ``seen`` (``(k, j, i)`` bool; None: all)): voxels
      outside it (air, dense bone) that the attack moved into the window map back to changes of
      hundreds of HU and would wash out what the model actually sees; ``perturbation_range``
      is ±max;
    * DCT pictures: ``[0, 99.9th percentile]`` of the clean picture, shared by both;
    * quantization table: its minimum and maximum; a minimum of 0 (coefficients not
      quantized: outside a band-limited VAFA's band, or tiles never attacked) is drawn grey
      (:func:`napari_vafa._result_layers.q_table_colormap`).
    """
    limits: dict[str, tuple[float, float]] = {}
    change = np.abs(layers["perturbation"])
    inside = change[(change != 0) & seen] if seen is not None else np.empty(0)
    change = change[change != 0]
    if change.size:
        high = float(change.max())
        limit = float(np.percentile(inside if inside.size else change, 99.5)) or high
        limits["perturbation"] = (-limit, limit)
        limits["perturbation_range"] = (-high, high)
    else:
        limits["perturbation"] = limits["perturbation_range"] = (-1.0, 1.0)
    if "dct_clean" in layers:
        high = float(np.percentile(layers["dct_clean"], 99.9)) or 1.0
        limits["dct_clean"] = limits["dct_adversarial"] = (0.0, high)
    if "q_table" in layers:
        low, high = float(layers["q_table"].min()), float(layers["q_table"].max())
        limits["q_table"] = (low, max(high, low + 1.0))
    return limits


def _zeroed(outcome: AttackOutcome, block_size: tuple[int, ...]) -> np.ndarray:
    import torch

    from vafa.run.tiling import quantized_to_zero_layout

    q = torch.from_numpy(outcome.q_table.array)[None, None]
    mask = quantized_to_zero_layout(
        outcome.model_input.tensor, q, block_size, outcome.model_input.card.roi_size
    )
    return mask[0, 0].numpy()


def _label_dtype(outcome: AttackOutcome):
    high = max(outcome.clean_prediction.array.max(), outcome.adversarial_prediction.array.max())
    return np.uint8 if high <= 255 else np.int32


def _block_size(outcome: AttackOutcome) -> tuple[int, ...]:
    block = (outcome.settings.get("attack") or {}).get("block_size")
    if block is None:
        return (DISPLAY_BLOCK,) * 3
    if isinstance(block, int):
        return (block,) * 3
    return tuple(int(b) for b in block)


def _seen_by_model(outcome: AttackOutcome) -> np.ndarray | None:
    """``(k, j, i)`` mask of the voxels inside the model's intensity window (None: the
    result is on another grid than the clean image)."""
    clean = outcome.model_input.source.array
    if clean.shape != outcome.perturbation.shape:
        return None
    return np.transpose(window_interior(outcome.model_input.mapping, clean), (2, 1, 0))


def window_interior(mapping, clean: np.ndarray) -> np.ndarray:
    """Voxels of ``clean`` (file units) that the intensity ``mapping`` puts strictly inside
    (0, 1): the ones whose change the model sees as it is."""
    mapped = mapping.forward(clean)
    return (mapped > 0) & (mapped < 1)


def _steps_of(attack: str, options: dict[str, Any]) -> int:
    """The steps ``attack`` runs with ``options`` (its schema's default when not given)."""
    from vafa.attacks import attack_class

    if options.get("steps") is not None:
        return int(options["steps"])
    defaults = {o.name: o.default for o in attack_class(attack).options}
    return int(defaults.get("steps") or 0)


def _same_grid(image: Volume, card: ModelCard) -> bool:
    if card.orientation is not None and image.orientation != card.orientation:
        return False
    return card.spacing is None or bool(np.allclose(image.spacing, card.spacing, atol=1e-3))


def _load_model(spec: ModelSpec):
    return spec.handle().load(device=spec.device)


def _message(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    if isinstance(err, FileNotFoundError) and err.filename:
        text = f"file not found: {err.filename}"
    first = text.splitlines()[0]
    return first if len(first) <= 300 else first[:297] + "…"
