#!/usr/bin/env python
"""Build the bundled sample CT and organ labels (src/vafa/io/data/) from TotalSegmentator 2.18.0.

Source: the TotalSegmentator 2.18.0 source distribution on PyPI (Apache-2.0), which holds a real
abdominal/pelvic CT (``tests/reference_files/example_ct.nii.gz``, HU, 3 mm, RAS; native phase,
without contrast: aorta and liver ≈ 45 HU, and TotalSegmentator's own phase reference says
"native") and
TotalSegmentator's own prediction for it (``example_seg_fast_force_split.nii.gz``: task "total",
``--fast --ml --force_split``; model output, not manual annotation).

The CT is stored as int16 HU with the source's affine and header; the labels are renumbered to the
Synapse/BTCV convention of the paper (0 background … 13 left adrenal gland) and stored as uint8.
The outputs are bit-for-bit reproducible (nibabel writes gzip with no name and mtime 0).

Usage::

    python scripts/make_sample.py                    # downloads the sdist with pip into a temp dir
    python scripts/make_sample.py --sdist totalsegmentator-2.18.0.tar.gz [--out DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

from vafa.io.presets import BTCV_CLASSES
from vafa.io.volume import load_labels, load_volume, save_volume

PACKAGE, VERSION = "TotalSegmentator", "2.18.0"
SDIST_NAME = "totalsegmentator-2.18.0.tar.gz"
SDIST_SHA256 = "5d4223ef93973bc36d710869d11e7742ead2c154c72f7f9edcaaadd5b6c4bd03"
CT_MEMBER = "totalsegmentator-2.18.0/tests/reference_files/example_ct.nii.gz"
SEG_MEMBER = "totalsegmentator-2.18.0/tests/reference_files/example_seg_fast_force_split.nii.gz"
EXPECTED_SHAPE = (122, 101, 112)

CLASS_NAMES = BTCV_CLASSES  # Synapse/BTCV numbering, index = label value
# TotalSegmentator v2 "total" class id -> Synapse/BTCV label; every other id becomes 0.
TOTALSEG_TO_SYNAPSE = {
    1: 1,  # spleen
    2: 2,  # kidney_right
    3: 3,  # kidney_left
    4: 4,  # gallbladder
    15: 5,  # esophagus
    5: 6,  # liver
    6: 7,  # stomach
    52: 8,  # aorta
    63: 9,  # inferior_vena_cava
    64: 10,  # portal_vein_and_splenic_vein
    7: 11,  # pancreas
    8: 12,  # adrenal_gland_right
    9: 13,  # adrenal_gland_left
}
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "src" / "vafa" / "data"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sdist", type=Path, help=f"local {SDIST_NAME} (default: pip download)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    args = parser.parse_args(argv)
    if not args.out.is_dir():
        parser.error(f"--out must be an existing folder, got {args.out}")
    with tempfile.TemporaryDirectory(prefix="vafa-sample-") as tmp:
        sdist = args.sdist if args.sdist is not None else _download(Path(tmp))
        summary = build(sdist, args.out, Path(tmp))
    print(json.dumps({k: summary[k] for k in ("shape", "spacing_mm", "voxel_counts")}))
    return 0


def build(sdist: Path, out: Path, tmp: Path) -> dict:
    """Extract, check, relabel and write the sample into ``out``; returns the sample.json dict."""
    sdist_sha = _sha256(sdist)
    if sdist_sha != SDIST_SHA256:
        raise SystemExit(f"sha256 of {sdist} must be {SDIST_SHA256}, got {sdist_sha}")
    ct_path, seg_path = (_extract(sdist, member, tmp) for member in (CT_MEMBER, SEG_MEMBER))
    ct = load_volume(ct_path)
    seg = load_labels(seg_path, like=ct, max_classes=256)
    if ct.shape != EXPECTED_SHAPE or ct.orientation != "RAS":
        raise SystemExit(f"unexpected source grid: shape {ct.shape}, orientation {ct.orientation}")
    source_ids = np.unique(seg.array).astype(int)
    absent = [
        f"{k} ({CLASS_NAMES[v]})" for k, v in TOTALSEG_TO_SYNAPSE.items() if k not in source_ids
    ]
    if absent:
        print(f"note: TotalSegmentator ids absent from the source labels: {', '.join(absent)}")

    lut = np.zeros(256, dtype=np.uint8)
    for total_id, synapse_id in TOTALSEG_TO_SYNAPSE.items():
        lut[total_id] = synapse_id
    labels = lut[seg.array.astype(np.int64)]

    ct_out = save_volume(ct, out / "sample_ct.nii.gz", overwrite=True, dtype=np.int16)
    seg_out = save_volume(
        seg.with_array(labels, dtype=np.uint8),
        out / "sample_labels.nii.gz",
        overwrite=True,
        dtype=np.uint8,
    )
    counts = np.bincount(labels.ravel(), minlength=len(CLASS_NAMES))
    summary = {
        "description": (
            "Real abdominal/pelvic CT (Hounsfield units; native phase, no contrast agent; lung "
            "bases to femoral heads) with organ labels in the Synapse/BTCV numbering, for demos "
            "and tests."
        ),
        "image": ct_out.name,
        "labels": seg_out.name,
        "shape": list(ct.shape),
        "spacing_mm": [round(s, 6) for s in ct.spacing],
        "orientation": ct.orientation,
        "image_dtype": "int16",
        "image_units": "HU",
        "image_range": [int(ct.array.min()), int(ct.array.max())],
        "labels_dtype": "uint8",
        "class_names": list(CLASS_NAMES),
        "voxel_counts": [int(c) for c in counts],
        "labels_origin": (
            "TotalSegmentator model output (task 'total', --fast --ml --force_split), not manual "
            "annotation; renumbered from TotalSegmentator class ids to Synapse/BTCV labels, all "
            "other TotalSegmentator classes set to 0"
        ),
        "label_mapping": {str(k): v for k, v in TOTALSEG_TO_SYNAPSE.items()},
        "source": {
            "package": PACKAGE,
            "version": VERSION,
            "sdist": SDIST_NAME,
            "sdist_sha256": sdist_sha,
            "image_file": CT_MEMBER.split("/", 1)[1],
            "image_file_sha256": _sha256(ct_path),
            "labels_file": SEG_MEMBER.split("/", 1)[1],
            "labels_file_sha256": _sha256(seg_path),
            "url": "https://github.com/wasserth/TotalSegmentator",
        },
        "license": "Apache-2.0",
        "sha256": {ct_out.name: _sha256(ct_out), seg_out.name: _sha256(seg_out)},
    }
    _write_json_atomic(summary, out / "sample.json")
    return summary


def _download(folder: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
    cmd += [f"{PACKAGE.lower()}=={VERSION}", "-d", str(folder)]
    subprocess.run(cmd, check=True)
    return folder / SDIST_NAME


def _extract(sdist: Path, member: str, folder: Path) -> Path:
    with tarfile.open(sdist, "r:gz") as tar:
        fh = tar.extractfile(member)
        if fh is None:
            raise SystemExit(f"{sdist} must contain the file {member}")
        target = folder / Path(member).name
        target.write_bytes(fh.read())
    return target


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _write_json_atomic(data: dict, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


if __name__ == "__main__":
    sys.exit(main())
