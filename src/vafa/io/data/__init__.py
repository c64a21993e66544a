"""Bundled sample data and demo model (see NOTICE)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from torch import nn

    from vafa.io.models import ModelCard
    from vafa.io.volume import Volume

__all__ = [
    "BUNDLED_MODELS",
    "SAMPLE_CLASS_NAMES",
    "bundled_model_path",
    "bundled_models",
    "demo_model_path",
    "load_demo_model",
    "load_sample",
    "sample_paths",
]

DATA_DIR = Path(__file__).resolve().parent

# ---------------------------------------------------------------------------------------------
# Sample CT and organ labels (built by scripts/make_sample.py from TotalSegmentator 2.18.0;
# described by sample.json). Real abdominal CT in HU, 122×101×112 voxels at 3 mm, RAS; labels
# in the Synapse/BTCV numbering 0..13 (TotalSegmentator model output, not manual annotation).
# ---------------------------------------------------------------------------------------------

_SAMPLE_INFO = json.loads((DATA_DIR / "sample.json").read_text(encoding="utf-8"))

#: Class names indexed by label value (14 entries, 0 = "background").
SAMPLE_CLASS_NAMES: tuple[str, ...] = tuple(_SAMPLE_INFO["class_names"])


def sample_paths() -> tuple[Path, Path]:
    """Paths of the bundled sample: ``(sample_ct.nii.gz, sample_labels.nii.gz)``."""
    return DATA_DIR / _SAMPLE_INFO["image"], DATA_DIR / _SAMPLE_INFO["labels"]


def load_sample() -> tuple[Volume, Volume]:
    """Load the bundled sample as ``(image, labels)``.

    Returns:
        ``image``: float32 CT in HU, shape ``[122, 101, 112]`` (``(i, j, k)``, 3 mm, RAS).
        ``labels``: float32 whole numbers in 0..13 on the same grid (see
        :data:`SAMPLE_CLASS_NAMES`).
    """
    from vafa.io.volume import load_labels, load_volume

    ct_path, labels_path = sample_paths()
    image = load_volume(ct_path)
    labels = load_labels(labels_path, like=image, max_classes=len(SAMPLE_CLASS_NAMES))
    return image, labels


# ---------------------------------------------------------------------------------------------
# Demo model (built by scripts/train_demo_model.py; its card and demo_model_report.json record
# how it was trained and its Dice on the sample). A small MONAI UNet (preset "demo-unet") fitted
# to the bundled sample only: 14 BTCV classes, CT window [-175, 250] HU, 3 mm RAS, ROI 128³.
# ---------------------------------------------------------------------------------------------

DEMO_MODEL_NAME = "demo_model.safetensors"
DEMO_REPORT_NAME = "demo_model_report.json"
#: Bundled models by the name the CLI and the plugin accept in place of a weights path:
#: ``demo`` (the clean demo model) and ``robust-demo`` (the demo model fine-tuned with VAFT,
#: ``vafa-fr`` mode, by ``scripts/vaft_evidence.sh``; shipped once that evidence run is made).
BUNDLED_MODELS = {
    "demo": DEMO_MODEL_NAME,
    "robust-demo": "robust_demo_model.safetensors",
}


def bundled_models() -> dict[str, Path]:
    """The bundled models present in this installation, ``{name: weights path}``."""
    paths = {name: DATA_DIR / file for name, file in BUNDLED_MODELS.items()}
    return {name: path for name, path in paths.items() if path.is_file()}


def bundled_model_path(name: str) -> Path:
    """Weights of the bundled model ``name`` (``"demo"`` or ``"robust-demo"``).

    Raises:
        ValueError: unknown name, or a model this installation does not ship.
    """
    if name not in BUNDLED_MODELS:
        raise ValueError(f"unknown bundled model {name!r}; choose from {sorted(BUNDLED_MODELS)}")
    path = DATA_DIR / BUNDLED_MODELS[name]
    if not path.is_file():
        raise ValueError(f"the bundled model {name!r} is not installed ({path.name} missing)")
    return path


def demo_model_path() -> Path:
    """Path of the bundled demo model's weights (its card is ``<path>.json`` beside it)."""
    return DATA_DIR / DEMO_MODEL_NAME


def load_demo_model(device: str | torch.device = "auto") -> tuple[nn.Module, ModelCard]:
    """Load the bundled demo model and its card (:func:`vafa.io.checkpoints.load_model`).

    Args:
        device: ``"auto"`` (cuda → mps → cpu), ``"cpu"``, ``"cuda:N"``, ``"mps"`` or a
            :class:`torch.device`.

    Returns:
        ``(model, card)``: the network in eval mode on ``device`` (``[B, 1, H, W, D]`` inputs in
        [0, 1], sides multiples of 8; the card's ROI is 128³ → ``[B, 14, H, W, D]`` logits) and
        its :class:`vafa.io.models.ModelCard` (class names, CT window, spacing, provenance with the
        training run and its Dice; details in ``demo_model_report.json``).
    """
    from vafa.io.checkpoints import load_model

    return load_model(demo_model_path(), device=device)
