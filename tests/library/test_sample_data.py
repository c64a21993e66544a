"""The bundled sample (scripts/make_sample.py): files, grid, labels and sample.json agree."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from vafa.io.data import SAMPLE_CLASS_NAMES, load_sample, sample_paths

DATA = Path(__file__).resolve().parents[2] / "src" / "vafa" / "io" / "data"
SHAPE = (122, 101, 112)
# affine of TotalSegmentator's tests/reference_files/example_ct.nii.gz (3 mm, RAS)
AFFINE = np.array(
    [
        [3.0, 0.0, 0.0, -177.95632935],
        [0.0, 3.0, 0.0, 11.31900024],
        [0.0, 0.0, 3.0, 94.30175781],
        [0.0, 0.0, 0.0, 1.0],
    ]
)
BTCV_NAMES = (
    "background",
    "spleen",
    "right kidney",
    "left kidney",
    "gallbladder",
    "esophagus",
    "liver",
    "stomach",
    "aorta",
    "inferior vena cava",
    "portal and splenic veins",
    "pancreas",
    "right adrenal gland",
    "left adrenal gland",
)


@pytest.fixture(scope="module")
def info() -> dict:
    return json.loads((DATA / "sample.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def ct_img():
    return nib.load(DATA / "sample_ct.nii.gz")


@pytest.fixture(scope="module")
def labels_raw() -> np.ndarray:
    return np.asanyarray(nib.load(DATA / "sample_labels.nii.gz").dataobj)


def test_files_exist_and_paths():
    ct, labels = sample_paths()
    assert ct == DATA / "sample_ct.nii.gz"
    assert labels == DATA / "sample_labels.nii.gz"
    for name in ("sample_ct.nii.gz", "sample_labels.nii.gz", "sample.json", "NOTICE"):
        assert (DATA / name).is_file(), name


def test_ct_file_as_documented(ct_img):
    assert ct_img.shape == SHAPE
    assert ct_img.get_data_dtype() == np.int16
    np.testing.assert_allclose(ct_img.affine, AFFINE, atol=1e-6)
    assert nib.aff2axcodes(ct_img.affine) == ("R", "A", "S")
    assert (int(ct_img.header["qform_code"]), int(ct_img.header["sform_code"])) == (0, 2)
    raw = ct_img.dataobj.get_unscaled()
    np.testing.assert_array_equal(np.asanyarray(ct_img.dataobj), raw)  # no intensity scaling


def test_labels_file_as_documented(labels_raw):
    img = nib.load(DATA / "sample_labels.nii.gz")
    assert img.shape == SHAPE
    assert img.get_data_dtype() == np.uint8
    np.testing.assert_allclose(img.affine, AFFINE, atol=1e-6)
    assert set(np.unique(labels_raw).tolist()) <= set(range(14))


def test_sample_json(info, labels_raw):
    assert info["class_names"] == list(BTCV_NAMES)
    assert SAMPLE_CLASS_NAMES == BTCV_NAMES
    assert info["shape"] == list(SHAPE)
    assert info["spacing_mm"] == [3.0, 3.0, 3.0]
    assert info["license"] == "Apache-2.0"
    assert info["source"]["package"] == "TotalSegmentator"
    assert info["source"]["version"] == "2.18.0"
    assert len(info["source"]["sdist_sha256"]) == 64
    assert "not manual annotation" in info["labels_origin"]
    counts = np.bincount(labels_raw.ravel(), minlength=14)
    assert info["voxel_counts"] == counts.tolist()
    assert sum(info["voxel_counts"]) == int(np.prod(SHAPE))


def test_sample_json_checksums_match_files(info):
    for name, digest in info["sha256"].items():
        assert hashlib.sha256((DATA / name).read_bytes()).hexdigest() == digest, name


def test_organs_present(info):
    present = {SAMPLE_CLASS_NAMES[i] for i, n in enumerate(info["voxel_counts"]) if n and i}
    # esophagus (TotalSegmentator id 15) is absent from the source segmentation
    assert present == set(BTCV_NAMES[1:]) - {"esophagus"}
    assert info["voxel_counts"][6] > 10_000  # liver, the largest organ


def test_load_sample_float32_hu(ct_img, labels_raw, info):
    image, labels = load_sample()
    assert image.array.dtype == np.float32 and labels.array.dtype == np.float32
    assert image.shape == labels.shape == SHAPE
    assert image.spacing == (3.0, 3.0, 3.0)
    np.testing.assert_array_equal(image.affine, ct_img.affine)
    np.testing.assert_array_equal(image.array, ct_img.dataobj.get_unscaled().astype(np.float32))
    np.testing.assert_array_equal(labels.array, labels_raw.astype(np.float32))
    # plausible CT: air near -1000 HU, bone/contrast well above soft tissue; a few hundred voxels
    # lie just outside [-1024, 3071] (the source file's own values, kept unchanged)
    low, high = float(image.array.min()), float(image.array.max())
    assert [low, high] == info["image_range"]
    assert -1300 <= low <= -900 and 1000 <= high <= 4000
    inside = np.mean((image.array >= -1024) & (image.array <= 3071))
    assert inside > 0.999
    liver = image.array[labels.array == 6]
    assert 0 < np.median(liver) < 200  # soft tissue HU
