"""The attack widget's *step scrubber*: after a run (the lens or a full run) a slider 0…steps
shows the adversarial image, the model's prediction, the quantization table and the step's
Dice/SSIM as they were at that step — the library's own iterates, kept by
:class:`vafa.run.history.StepHistory` (float16 volumes, every k-th step above a memory cap).

Step 0 is the clean image. At the step the attack returned, the run's own result layers come
back exactly. The history is released when another run is attached or a full run starts.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import Label, Slider

if TYPE_CHECKING:
    from vafa.io.intensity import IntensityMapping
    from vafa.run.history import StepHistory

__all__ = ["ScrubSource", "Scrubber", "returned_position", "run_source"]

#: Layer keys the scrubber rewrites (those of the run that exist).
SCRUBBED = ("adversarial", "perturbation", "adversarial_prediction", "q_table")
#: A step that takes longer than this (s) to show turns the slider's tracking off for the rest
#: of its run: dragging then shows the step where the slider is released, not every step it
#: passes (each would hold the GUI that long: half a second a step for four BraTS-sized
#: channels).
TRACKING_LIMIT_S = 0.1


@dataclass
class ScrubSource:
    """A run the scrubber can replay.

    Attributes:
        name: what ran ("lens", "run"), for the info line.
        history: its iterates.
        channels: per channel shown (channel 0 first), its fitted intensity window (to bring
            [0, 1] back to file units) and its clean image where the history lives, ``(i, j,
            k)`` file units.
        layers: ``{key: layer}`` the layers to rewrite (:data:`SCRUBBED` keys, per channel
            as :func:`~napari_vafa._channels.channel_key` names them).
        result: the run's own layer data by key (shown at the returned position).
        returned: the slider position of the returned iterate.
        clean_dice: foreground Dice of the clean image (step 0), if known.
    """

    name: str
    history: StepHistory
    channels: Sequence[tuple[IntensityMapping, np.ndarray]]
    layers: dict[str, Any]
    result: dict[str, np.ndarray]
    returned: int
    clean_dice: float | None = None


def returned_position(steps: Sequence[Any], total: int) -> int:
    """Slider position of a run's returned iterate: its step when every tile (batch) returned
    the same numbered step, else the last step (e.g. ``"final"``: after the last update)."""
    numbered = {s for s in steps if isinstance(s, int)}
    if len(numbered) == 1 and len(numbered) == len(set(steps)):
        return int(numbered.pop())
    return int(total)


def run_source(done, layers: dict[str, Any]) -> ScrubSource:
    """The :class:`ScrubSource` of a full run (``done``: a
    :class:`napari_vafa._worker.JobDone` with a history; ``layers``: its result layers)."""
    from vafa.io.channels import Channels, channel_volumes

    outcome, history = done.outcome, done.history
    returned = [row["step"] for row in outcome.history if row.get("returned")]
    dice = outcome.metrics.dice_fg.clean
    source, mapping = outcome.model_input.source, outcome.model_input.mapping
    windows = mapping.windows if isinstance(source, Channels) else (mapping,)
    units = (v.array for v in channel_volumes(source))  # each channel's own: no stacked copy
    return ScrubSource(
        name="run",
        history=history,
        channels=list(zip(windows, units, strict=True)),
        layers=layers,
        result=done.layers,
        returned=returned_position(returned, history.total),
        clean_dice=None if dice is None else float(dice),
    )


class Scrubber:
    """The step slider and its info line (``slider``, ``info``: magicgui widgets to place).

    Args:
        on_error: called with a message when a step cannot be shown.
        on_step: called with the step of a full run being shown, None when none is (the
            widget marks it on the run's curve).
    """

    def __init__(
        self, on_error: Callable[[str], Any], on_step: Callable[[int | None], Any] | None = None
    ) -> None:
        self.slider = Slider(label="step", min=0, max=0, value=0, enabled=False)
        self.info = Label(value="")
        self.source: ScrubSource | None = None
        self._on_error = on_error
        self._on_step = on_step  # called with a full run's step shown (None: none)
        self.slider.changed.connect(self._show)

    def attach(self, source: ScrubSource) -> None:
        """Replay ``source`` from now on (the previous history is released); the slider
        stands at the returned iterate."""
        self.detach()
        history = source.history
        self.source = source
        self.slider.tracking = True  # until a step of this source shows slowly
        with self.slider.changed.blocked():
            self.slider.max = max(history.total, 0)
            self.slider.step = history.stride
            self.slider.value = min(source.returned, self.slider.max)
        self.slider.enabled = history.total > 0
        self._describe(self.slider.value)
        self._mark(self.slider.value)

    def detach(self) -> None:
        """Forget the current run and free its history."""
        source, self.source = self.source, None
        if source is not None:
            source.history.release()
        self.slider.enabled = False
        self.info.value = ""
        self._mark(None)

    def frames(self, step: int) -> dict[str, np.ndarray]:
        """Layer data of ``step`` (``(k, j, i)``, file units) for the keys of the run: every
        channel the source shows (:func:`~napari_vafa._channels.channel_key`)."""
        return dict(self._frames(step))

    def _frames(self, step: int) -> Iterator[tuple[str, np.ndarray]]:
        """:meth:`frames` one layer at a time, a channel's history read only when its layers
        come (one channel of a big multi-channel run in memory at once, not all)."""
        from napari_vafa._channels import channel_key, split_key

        source = self.source
        if source is None:
            return
        if step == source.returned:
            yield from ((k, v) for k, v in source.result.items() if split_key(k)[0] in SCRUBBED)
            return
        kept = None
        for c, (window, clean) in enumerate(source.channels):
            kept = source.history.at(step, channels=(c,))
            adversarial = window.inverse(kept.adversarial[0], clean).astype(np.float32, copy=False)
            yield channel_key("adversarial", c), _kji(adversarial)
            yield channel_key("perturbation", c), _kji(adversarial - clean)
            if "q_table" in source.result:
                q = kept.q_table[0] if kept.q_table is not None else np.zeros(clean.shape)
                yield channel_key("q_table", c), _kji(q).astype(np.float32, copy=False)
        prediction = None if kept is None else kept.prediction
        if prediction is not None:
            dtype = source.result.get("adversarial_prediction", prediction).dtype
            yield "adversarial_prediction", _kji(prediction).astype(dtype, copy=False)

    def _show(self, step: int) -> None:
        source = self.source
        if source is None:
            return
        start = time.perf_counter()
        try:
            for key, data in self._frames(int(step)):
                layer = source.layers.get(key)
                if layer is not None and data.shape == tuple(layer.data.shape):
                    layer.data = data
        except Exception as err:  # a layer changed under us: report, stay usable
            self._on_error(f"could not show step {step}: {err}")
            return
        if time.perf_counter() - start > TRACKING_LIMIT_S:  # for the rest of this source
            self.slider.tracking = False
        self._describe(int(step))
        self._mark(int(step))

    def _mark(self, step: int | None) -> None:
        if self._on_step is not None:
            source = self.source  # the curve's x is the step of a one-tile run only
            run = source is not None and source.name == "run" and len(source.history.tiles) == 1
            self._on_step(step if run and step is not None else None)

    def _describe(self, step: int) -> None:
        source = self.source
        if source is None:
            return
        history = source.history
        kept = history.nearest(step)
        total = history.total
        if kept == 0:
            dice = "" if source.clean_dice is None else f" · Dice {source.clean_dice:.3f}"
            self.info.value = f"{source.name} step 0/{total}: the clean image{dice}"
            return
        scores = history.scores(kept)
        text = f"{source.name} step {kept}/{total}"
        if scores["dice"] is not None:
            text += f" · Dice {scores['dice']:.3f}"
        if scores["ssim"] is not None:
            text += f" · SSIM {scores['ssim']:.3f}"
        if step == source.returned:
            text += " · the iterate the attack returned"
        if history.stride > 1:
            text += f" (every {history.stride}th step kept)"
        self.info.value = text


def _kji(array: np.ndarray) -> np.ndarray:
    """napari's ``(k, j, i)`` view of an ``(i, j, k)`` array, without a copy: napari slices
    the plane it shows out of it, and a contiguous copy of every channel's volume cost half a
    scrubber step (0.64 of 1.14 s for four 240×240×155 channels)."""
    return np.transpose(array, (2, 1, 0))
