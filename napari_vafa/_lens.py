"""The attack widget's *live lens*: a cube around the view point, attacked again whenever a
setting or the view changes, shown in place within about a second.

* :func:`run_lens` — the background job (a generator, no Qt): model, model input (cached per
  image), a plan that fits the time budget (:func:`vafa.run.lens.plan_lens`, from a measured
  pass time that later lenses refine), :func:`vafa.run.lens.iter_lens`, and the layer data in
  the image's units and napari's ``(k, j, i)`` order.
* :class:`LensRunner` — one lens job at a time on the GUI side: a new request cancels the
  running job (it stops between two steps) and runs as soon as it has stopped; only the newest
  request runs, and a cancelled job's result is never shown.

The lens works on the image's own grid (the model's grid, as for the bundled sample); an image
that the model would see resampled gets a one-line message instead.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_vafa._worker import (
    JobCancelled,
    JobFailed,
    ModelCache,
    ModelSpec,
    load_in_worker,
)

if TYPE_CHECKING:
    from vafa.io.intensity import IntensityMapping
    from vafa.io.volume import Volume
    from vafa.run.lens import LensPlan, LensResult

__all__ = [
    "LENS_LAYERS",
    "LENS_ORDER",
    "LensDone",
    "LensJob",
    "LensPlanner",
    "LensProgress",
    "LensRunner",
    "lens_source",
    "run_lens",
    "whole_side",
]

#: Lens layers: key → layer name.
LENS_LAYERS = {
    "q_table": "lens: quantization table",
    "perturbation": "lens: perturbation",
    "adversarial": "lens: adversarial",
    "clean_prediction": "lens: clean prediction",
    "adversarial_prediction": "lens: adversarial prediction",
}
#: Their stacking order (bottom first).
LENS_ORDER = tuple(LENS_LAYERS)
#: Seconds of a lens's budget kept for the GUI (making the job, showing the result).
GUI_MARGIN = 0.15
#: A lens's progress is shown once it has run this long, at most this often (seconds).
PROGRESS_AFTER_S = 1.0
PROGRESS_EVERY_S = 0.5


@dataclass
class LensJob:
    """One lens request (built on the GUI thread).

    Attributes:
        image: the image in file units (``(i, j, k)``); ``image_key`` identifies the image and
            labels data (the same key: the model input of the last lens is reused).
        labels: ground truth on its grid, or None (the model's prediction is attacked).
        center: the view point in the image's voxel coordinates ``(i, j, k)``.
        size: the wanted side of the cube (0: the whole volume); budget: seconds it should
            take.
    """

    image: Volume
    labels: Volume | None
    model: ModelSpec
    attack: str
    options: dict[str, Any]
    seed: int | None
    center: tuple[float, float, float]
    image_key: Any = None
    size: int = 64
    budget: float = 1.0
    threads: int | None = None


@dataclass
class LensProgress:
    """One step of a lens job."""

    step: int
    total: int


@dataclass
class LensDone:
    """A finished lens.

    Attributes:
        result: the library's :class:`~vafa.run.lens.LensResult`.
        layers: layer data by key of :data:`LENS_LAYERS`, ``(k, j, i)``, in the image's units.
        limits: contrast limits (``perturbation``, ``perturbation_range``, ``q_table``).
        start_kji: the cube's first voxel in napari's order (where its layers are placed).
        mapping: the model's intensity mapping, fitted to the image (for the scrubber; a
            multi-channel model's: its first channel's).
        clean_units: the cube of the clean image, ``(i, j, k)`` file units (a multi-channel
            model's: its first channel, the one the lens is drawn over).
        class_names: the model's class names.
        timings: seconds (load, plan, attack, layers).
    """

    result: LensResult
    layers: dict[str, np.ndarray]
    limits: dict[str, tuple[float, float]]
    start_kji: tuple[int, int, int]
    mapping: IntensityMapping
    clean_units: np.ndarray
    class_names: list[str]
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def plan(self) -> LensPlan | None:
        return self.result.plan


class LensPlanner:
    """What lens jobs keep between runs: the model input of the last image, and a pass time
    per model and cube side (measured once, then refined by every finished lens)."""

    def __init__(self) -> None:
        self._input_key: Any = None
        self._input: tuple[Any, Any, Any] | None = None
        self._pass: dict[tuple[Any, int], float] = {}
        self._fixed: dict[Any, int] = {}

    def model_input(self, job: LensJob, card):
        """``(x01 [1, C, H, W, D], labels [1, 1, H, W, D] or None, fitted mapping)``."""
        from vafa.io.model_space import labels_to_model_space, to_model_space

        key = (job.image_key, card.architecture)
        if job.image_key is None or key != self._input_key or self._input is None:
            model_input = to_model_space(job.image, card)
            labels = None
            if job.labels is not None:
                labels = labels_to_model_space(job.labels, model_input)
            self._input = (model_input.tensor, labels, model_input.mapping)
            self._input_key = key
        return self._input

    def plan(self, model, card, job: LensJob, steps: int, wanted: int) -> LensPlan:
        """The lens that fits ``job.budget`` less :data:`GUI_MARGIN` (measures a cube side's
        pass time the first time it is considered, then uses what lenses took)."""
        from vafa.run.lens import LensPlan, plan_lens

        spec = job.model
        size = self._fixed.get(spec) or wanted
        if self._pass_seconds(model, card, spec, size) is None:
            size = int(card.roi_size[0])  # the model refuses other sizes: its own tile only
            self._fixed[spec] = size
            if self._pass_seconds(model, card, spec, size) is None:
                raise ValueError(f"the model does not accept a {size}³ cube")
        fixed = spec in self._fixed
        budget = max(job.budget - GUI_MARGIN, 0.1)
        plan = plan_lens(self._pass[(spec, size)], size=size, steps=steps, budget=budget,
                         fixed_size=fixed)  # fmt: skip
        for _ in range(3):  # a smaller side: plan again with that side's own time
            if plan.size == size:
                break
            size = plan.size
            seconds = self._pass_seconds(model, card, spec, size)
            if seconds is None:
                break
            plan = plan_lens(seconds, size=size, steps=steps, budget=budget)
        if plan.size == wanted and plan.steps == steps:
            return plan
        changed = [f"{plan.steps} of {steps} steps"] if plan.steps != steps else []
        if plan.size != wanted:
            changed.insert(0, f"cube {plan.size}³ instead of {wanted}³")
        note = f"{', '.join(changed)} to answer within {job.budget:g} s"
        if plan.seconds > budget:
            note += f" (this model needs ≈{plan.seconds + GUI_MARGIN:.1f} s even so)"
        return LensPlan(plan.size, plan.steps, plan.seconds, note)

    def observe(self, spec: ModelSpec, result: LensResult) -> None:
        """Refine the pass time of ``result``'s cube side from its measured duration."""
        from vafa.run.lens import SETUP_PASSES, STEP_OVERHEAD

        plan = result.plan
        if plan is None or result.cancelled or plan.steps == 0:
            return
        seen = result.seconds / (STEP_OVERHEAD * plan.steps + SETUP_PASSES)
        key = (spec, plan.size)
        before = self._pass.get(key, seen)
        self._pass[key] = 0.5 * before + 0.5 * seen

    def _pass_seconds(self, model, card, spec: ModelSpec, size: int) -> float | None:
        from vafa.run.lens import measure_step_seconds

        key = (spec, size)
        if key not in self._pass:
            try:
                self._pass[key] = measure_step_seconds(model, size, card.in_channels)
            except ValueError:
                return None
        return self._pass[key]


def run_lens(
    job: LensJob, cancel: threading.Event, cache: ModelCache, planner: LensPlanner
) -> Generator[LensProgress, Any, LensDone | JobFailed | JobCancelled]:
    """One lens: yields a :class:`LensProgress` per step, returns the result (never raises)."""
    from vafa.io.model_space import grid_differs
    from vafa.run.lens import iter_lens, lens_region
    from vafa.run.progress import relay

    timings: dict[str, float] = {}
    try:
        model, card = load_in_worker(job.threads, cache.get, job.model, timings)
        if grid_differs(job.image, card):
            spacing = ", ".join(f"{s:g}" for s in card.spacing or ())
            raise ValueError(
                f"the live lens needs the image on the model's grid ({card.orientation}, "
                f"{spacing} mm); use Run, which resamples"
            )
        with cache.in_use:
            if cancel.is_set():
                return JobCancelled(timings)
            start = time.perf_counter()
            x01, labels, mapping = planner.model_input(job, card)
            options = dict(job.options)
            steps = int(options.get("steps", 0) or 0)
            plan = planner.plan(model, card, job, steps, job.size or whole_side(x01.shape[2:]))
            if "steps" in options:
                options["steps"] = plan.steps
            timings["plan"] = time.perf_counter() - start
            start = time.perf_counter()
            region = lens_region(x01.shape[2:], job.center, plan.size)
            gen = iter_lens(
                model, x01, labels, region, num_classes=card.out_channels, attack=job.attack,
                options=options, seed=job.seed, size=plan.size, plan=plan, heads=card.heads(),
            )  # fmt: skip
            result = yield from relay(
                gen, lambda event: LensProgress(event.step, event.total), cancel=cancel
            )
            timings["attack"] = time.perf_counter() - start
        if result.cancelled:
            return JobCancelled(timings)
        planner.observe(job.model, result)
        start = time.perf_counter()
        done = _lens_done(job, result, mapping, card)
        done.timings = {**timings, "layers": time.perf_counter() - start}
        return done
    except Exception as err:  # every failure becomes a status line, never a crash
        return JobFailed.from_exception(err)


def whole_side(shape) -> int:
    """The side of a cube holding a whole volume of ``shape`` (a multiple of 16: strided
    networks need one)."""
    return 16 * -(-max(int(n) for n in shape) // 16)


def _lens_done(job: LensJob, result: LensResult, mapping, card) -> LensDone:
    """The lens layers of the first channel (a multi-channel model's other channels are
    attacked with it but shown by Run), in the image's units."""
    from napari_vafa._layer_data import display_limits, napari_order, window_interior
    from vafa.io.channels import Channels, channel_volumes

    region = result.region
    if isinstance(job.image, Channels):  # the channel the lens is drawn over, and its window
        mapping = mapping.windows[0]
    clean_units = np.asarray(channel_volumes(job.image)[0].array[region], dtype=np.float32)
    adversarial = mapping.inverse(result.adversarial01[0], clean_units).astype(np.float32)

    labels_dtype = np.uint8 if card.out_channels <= 256 else np.int32
    layers = {
        "adversarial": napari_order(adversarial, np.float32),
        "perturbation": napari_order(adversarial - clean_units, np.float32),
        "clean_prediction": napari_order(result.clean_prediction, labels_dtype),
        "adversarial_prediction": napari_order(result.adversarial_prediction, labels_dtype),
    }
    if result.q_table is not None:
        layers["q_table"] = napari_order(result.q_table[0], np.float32)
    limits = display_limits(layers, napari_order(window_interior(mapping, clean_units), None))
    start = tuple(int(s.start) for s in region)[::-1]
    return LensDone(result, layers, limits, start, mapping, clean_units, list(card.class_names))  # type: ignore[arg-type]


def lens_source(source: SimpleNamespace, start_kji: tuple[int, int, int]) -> SimpleNamespace:
    """The image layer's description with its ``translate`` moved to the cube's first voxel."""
    translate = tuple(
        float(t) + float(s) * int(k)
        for t, s, k in zip(source.translate[-3:], source.scale[-3:], start_kji, strict=True)
    )
    return SimpleNamespace(**{**vars(source), "translate": translate})


class LensRunner:
    """One lens job at a time; the newest request wins (GUI thread).

    Args:
        cache: the widget's model cache (shared with full runs; see ``ModelCache.in_use``).
        on_progress, on_done, on_failed: GUI callbacks with a :class:`LensProgress`, a
            :class:`LensDone`, a one-line message.
    """

    def __init__(
        self,
        cache: ModelCache,
        on_progress: Callable[[LensProgress], Any],
        on_done: Callable[[LensDone], Any],
        on_failed: Callable[[str], Any],
    ) -> None:
        self.cache = cache
        self.planner = LensPlanner()
        self._on_progress, self._on_done, self._on_failed = on_progress, on_done, on_failed
        self._worker = None
        self._cancel: threading.Event | None = None
        self._pending: LensJob | None = None
        #: jobs started, those cancelled by a newer request, steps reported (tests, benchmarks)
        self.started = 0
        self.steps_seen = 0
        self.superseded = 0
        self.closed = False
        self._job_started = self._shown = 0.0

    @property
    def busy(self) -> bool:
        return self._worker is not None or self._pending is not None

    def request(self, job: LensJob) -> None:
        """Run ``job`` now, or as soon as the running job has stopped (which is asked now)."""
        if self.closed:
            return
        self._pending = job
        if self._worker is not None:
            if self._cancel is not None and not self._cancel.is_set():
                self._cancel.set()
                self.superseded += 1
            return
        self._start_pending()

    def stop(self) -> None:
        """Cancel the running job and drop the waiting one."""
        self._pending = None
        if self._cancel is not None:
            self._cancel.set()

    def close(self) -> None:
        self.closed = True
        self.stop()
        if self._worker is not None:
            self._worker.quit()

    def _start_pending(self) -> None:
        from napari.qt.threading import create_worker

        from napari_vafa._gc import freeze_old_objects, unfreeze_old_objects

        job, self._pending = self._pending, None
        if job is None or self.closed:
            return
        cancel = threading.Event()
        worker = create_worker(
            run_lens, job, cancel, self.cache, self.planner, _start_thread=False,
            _ignore_errors=True,
        )  # fmt: skip
        worker.yielded.connect(self._progress)
        worker.returned.connect(lambda value, c=cancel: self._returned(value, c))
        worker.finished.connect(lambda w=worker: self._finished(w))
        self._worker, self._cancel = worker, cancel
        self._job_started = self._shown = time.perf_counter()
        self.started += 1
        freeze_old_objects()  # short GC pauses while it runs (napari_vafa._gc)
        worker.finished.connect(unfreeze_old_objects)
        worker.start()

    def _progress(self, progress: LensProgress) -> None:
        """Progress of a slow lens only, at most every :data:`PROGRESS_EVERY_S`: a status
        update relays out the dock on the GUI thread, whose GIL then slows the job (measured:
        a 32³ lens took 0.55-0.63 s with a status line per step, 0.17-0.23 s without)."""
        if self.closed or self._cancel is None or self._cancel.is_set():
            return
        self.steps_seen += 1
        now = time.perf_counter()
        if now - self._job_started >= PROGRESS_AFTER_S and now - self._shown >= PROGRESS_EVERY_S:
            self._shown = now
            self._on_progress(progress)

    def _returned(self, value, cancel: threading.Event) -> None:
        if self.closed or cancel.is_set():
            return  # superseded: only the newest request is shown
        if isinstance(value, LensDone):
            self._on_done(value)
        elif isinstance(value, JobFailed):
            self._on_failed(value.message)

    def _finished(self, worker) -> None:
        if self._worker is worker:
            self._worker, self._cancel = None, None
        if not self.closed:
            self._start_pending()
