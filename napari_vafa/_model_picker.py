"""Model choice shared by the plugin's widgets: a bundled model, a weights file or a model
folder (a MONAI bundle or an nnU-Net v2 result folder), and a device.

:class:`ModelPicker` owns five magicgui controls (``model_source``, ``weights``, ``card_file``,
``card_preset``, ``device``) that a host widget places in its own form, and turns them into a
:class:`napari_vafa._worker.ModelSpec`. For a model folder, ``weights`` picks a folder and the
card controls hide (the folder describes itself); an nnU-Net folder gives its fold 0 (or its only
fold) and ``checkpoint_final.pth`` — the CLI's ``--fold``/``--checkpoint`` choose others.
``use_weights`` selects a file in one call (how the VAFT widget hands a freshly trained model
to the attack widget).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from magicgui.widgets import ComboBox, FileEdit

if TYPE_CHECKING:
    from napari_vafa._worker import ModelSpec

__all__ = ["BUNDLED_LABELS", "WEIGHTS_FILE", "ModelPicker", "path_or_none"]

#: Combo label of each bundled model (keys of :data:`vafa.io.data.BUNDLED_MODELS`).
BUNDLED_LABELS = {
    "demo": "bundled demo model",
    "robust-demo": "bundled robust demo model (VAFT)",
}
WEIGHTS_FILE = "weights file"
MODEL_FOLDER = "model folder (MONAI bundle or nnU-Net)"
#: Card combo entry meaning "the card file beside the weights, or the file chosen below".
CARD_FILE = "card file (beside the weights or chosen)"


class ModelPicker:
    """The model and device controls of a widget.

    Args:
        devices: the device names to offer (first is the default), e.g.
            :func:`vafa.ops.devices.available_devices`.

    Attributes:
        model_source: combo of the installed bundled models, ``"weights file"`` (value
            ``"file"``) and ``"model folder"`` (value ``"folder"``).
        weights, card_file: file pickers shown for ``"weights file"``; ``weights`` picks a
            folder for ``"model folder"``.
        card_preset: ``"file"`` (the card file) or a preset name (e.g. ``"unetr-btcv"``): the card of a
            preset instead of a file, for checkpoints that come without one.
        device: device combo.
    """

    NAMES = ("model_source", "weights", "card_preset", "card_file", "device")

    def __init__(self, devices: list[str]) -> None:
        from vafa.io.data import bundled_models
        from vafa.io.models import list_presets
        from vafa.io.state_dicts import CHECKPOINT_SUFFIXES

        sources = [(BUNDLED_LABELS.get(n, n), n) for n in bundled_models()]
        self.model_source = ComboBox(
            label="model",
            choices=[*sources, (WEIGHTS_FILE, "file"), (MODEL_FOLDER, "folder")],
        )
        suffixes = " ".join(f"*{suffix}" for suffix in CHECKPOINT_SUFFIXES)
        self.weights = FileEdit(label="weights", mode="r", filter=suffixes)
        self.card_preset = ComboBox(
            label="card",
            choices=[(CARD_FILE, "file"), *((name, name) for name in list_presets())],
            value="file",
        )
        self.card_file = FileEdit(label="card (optional)", mode="r", filter="*.json")
        self.device = ComboBox(label="device", choices=devices, value=devices[0])
        self.model_source.changed.connect(self.update_visibility)
        self.card_preset.changed.connect(self.update_visibility)
        self.update_visibility()

    @property
    def widgets(self) -> tuple[Any, ...]:
        """The controls, in form order."""
        return tuple(getattr(self, name) for name in self.NAMES)

    def update_visibility(self, *_: Any) -> None:
        source = self.model_source.value
        from_file = source == "file"
        self.weights.visible = source in ("file", "folder")
        self.weights.mode = "d" if source == "folder" else "r"
        self.weights.label = "folder" if source == "folder" else "weights"
        self.card_preset.visible = from_file
        self.card_file.visible = from_file and self.card_preset.value == "file"

    def use_weights(self, weights: str | Path, card: str | Path | None = None) -> None:
        """Select a weights file (and optionally its card) as the model."""
        self.model_source.value = "file"
        self.card_preset.value = "file"
        self.weights.value = Path(weights)
        if card is None:  # FileEdit.value = "" would mean the current folder
            self.card_file.line_edit.value = ""
        else:
            self.card_file.value = Path(card)

    def spec(self) -> ModelSpec:
        """The chosen model as a :class:`ModelSpec` (a model folder is a ``"file"`` spec whose
        weights are the folder: the library recognises it).

        Raises:
            ValueError: no weights file chosen, the weights/card file does not exist, or a
                folder that is neither a MONAI bundle nor an nnU-Net result folder.
        """
        from napari_vafa._worker import ModelSpec

        device = str(self.device.value)
        source = self.model_source.value
        if source not in ("file", "folder"):
            return ModelSpec(source, device=device)
        weights = path_or_none(self.weights.value)
        if weights is None:
            raise ValueError(f"choose a {'model folder' if source == 'folder' else 'weights file'}")
        if source == "folder" or weights.is_dir():
            return ModelSpec("file", weights=_model_folder(weights), device=device)
        if not weights.is_file():
            raise ValueError(f"weights file not found: {weights}")
        if self.card_preset.value != "file":
            return ModelSpec("file", weights=weights, card=self.card_preset.value, device=device)
        card = path_or_none(self.card_file.value)
        if card is not None and not card.is_file():
            raise ValueError(f"model card file not found: {card}")
        return ModelSpec("file", weights=weights, card=card, device=device)


def _model_folder(path: Path) -> Path:
    from vafa.io.handle import ModelSource

    if not path.is_dir():
        raise ValueError(f"model folder not found: {path}")
    ModelSource(path).path  # noqa: B018 - neither kind: a one-line error naming what it lacks
    return path


def path_or_none(value: Any) -> Path | None:
    """A FileEdit value as a path; None when empty."""
    if value is None or str(value).strip() in ("", "."):
        return None
    return Path(str(value)).expanduser()
