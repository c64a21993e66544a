"""Bundled sample data and demo model (see NOTICE)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vafa.volume import Volume

__all__ = ["SAMPLE_CLASS_NAMES", "load_sample", "sample_paths"]

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
    from vafa.volume import load_labels, load_volume

    ct_path, labels_path = sample_paths()
    image = load_volume(ct_path)
    labels = load_labels(labels_path, like=image, max_classes=len(SAMPLE_CLASS_NAMES))
    return image, labels


# ---------------------------------------------------------------------------------------------
# Demo model (to be added).
# ---------------------------------------------------------------------------------------------
