"""The tests' shared helpers, each defined once (fixtures live in conftest.py):

- tiny models: a 3-class MONAI UNet (or any preset) shrunk to a few hundred parameters, its
  card, a saved checkpoint, and a plugin model cache holding one;
- synthetic CTs: a noise CT (HU, in memory or as a file) and a CT phantom (air, a soft-tissue
  ball, a bone core) with its labels; labelled cases and datalists for training;
- DCT bands re-derived naively (scipy per block, exact fractions);
- driving jobs and widgets: a generator run to its end, a run clicked and waited for;
- reading results: CSV rows, file digests, whether a picture is blank.
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import json
import subprocess
import sys
from collections.abc import Callable, Generator
from fractions import Fraction
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch

from vafa.io.checkpoints import save_model
from vafa.io.models import ModelCard, build_model

CLASSES = ["background", "organ", "lesion"]
PHANTOM_CLASSES = ["background", "soft tissue", "bone"]
CT_SPACING = (1.5, 1.5, 2.0)  # the noise CTs' grid (the tiny card has none: no resampling)
PHANTOM_SPACING = (3.0, 3.0, 3.0)
PHANTOM_ORIGIN = (-30.0, -40.0, 10.0)


# ----------------------------------------------------------------------------- tiny models
def tiny_card(
    preset: str = "unet",
    *,
    out_channels: int = 3,
    class_names: list[str] | None = None,
    roi: int = 16,
    channels=(4, 8),
    strides=(2,),
    kwargs: dict[str, Any] | None = None,
    spacing=None,
    orientation=None,
    **overrides,
) -> ModelCard:
    """The card of a tiny ``preset`` network (16³ tiles by default, no resampling)."""
    if class_names is None:
        class_names = (
            CLASSES
            if out_channels == 3
            else ["background", *(f"organ {i}" for i in range(1, out_channels))]
        )
    if kwargs is None:
        kwargs = {"channels": list(channels), "strides": list(strides), "num_res_units": 0}
    return ModelCard.from_preset(
        preset,
        out_channels=out_channels,
        class_names=list(class_names),
        roi_size=(roi,) * 3,
        spacing=spacing,
        orientation=orientation,
        kwargs=kwargs,
        **overrides,
    )


def phantom_card(*, roi: int = 16, spacing=PHANTOM_SPACING, **overrides) -> ModelCard:
    """A tiny UNet card for :func:`ct_phantom`'s classes (background, soft tissue, bone) on
    its grid (3 mm, RAS)."""
    fields = {"orientation": "RAS", **overrides}
    return tiny_card(class_names=PHANTOM_CLASSES, roi=roi, spacing=spacing, **fields)


def tiny_model(card: ModelCard, seed: int = 0, *, norm_statistics: bool = False):
    """The network of ``card`` with weights drawn from ``seed`` (train mode).

    ``norm_statistics``: BatchNorm running statistics drawn too (non-default), so that a
    check of saved and loaded models covers the buffers."""
    torch.manual_seed(seed)
    model = build_model(card)
    if norm_statistics:
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, torch.nn.BatchNorm3d):
                    module.running_mean.uniform_(-0.5, 0.5)
                    module.running_var.uniform_(0.5, 1.5)
    return model


def save_tiny_model(path: Path, seed: int = 0, card: ModelCard | None = None) -> Path:
    """Save a tiny model (eval mode) and its card at ``path``."""
    card = tiny_card() if card is None else card
    save_model(tiny_model(card, seed).eval(), card, path)
    return path


def demo_cache(card: ModelCard):
    """``(spec, cache)``: the plugin's model cache holding ``card``'s tiny model (seed 0, eval)
    under ``ModelSpec("demo", device="cpu")``."""
    from napari_vafa._worker import ModelCache, ModelSpec

    spec = ModelSpec("demo", device="cpu")
    cache = ModelCache()
    cache.put(spec, tiny_model(card).eval(), card)
    return spec, cache


# ----------------------------------------------------------------------------- synthetic CTs
def grid_affine(spacing=CT_SPACING, origin=(0.0, 0.0, 0.0)) -> np.ndarray:
    """The 4×4 affine of an axis-aligned grid."""
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = origin
    return affine


def save_nifti(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> Path:
    """``array`` as NIfTI at ``path`` (its dtype kept; folders made), on the noise CT grid by
    default."""
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, grid_affine() if affine is None else affine), path)
    return path


def noise_ct(
    shape=(20, 18, 16), seed: int = 0, *, mean=40.0, std=60.0, dtype=np.float32, air: int = 0
) -> np.ndarray:
    """Gaussian noise in HU (``mean`` ± ``std``), ``(i, j, k)``; its first ``air`` i-slices
    are air (−1000 HU, outside the CT window)."""
    hu = np.random.default_rng(seed).normal(mean, std, shape).astype(dtype)
    if air:
        hu[:air] = -1000
    return hu


def noise_volume(shape=(20, 18, 16), seed: int = 0, **noise):
    """:func:`noise_ct` as a float32 Volume on the noise CT grid (1.5 × 1.5 × 2 mm)."""
    from vafa.io.volume import Volume

    return Volume(noise_ct(shape, seed, **noise), grid_affine())


def write_noise_ct(
    path: Path, shape=(20, 18, 16), seed: int = 0, *, spacing=CT_SPACING, **noise
) -> Path:
    """:func:`noise_ct` saved at ``path`` as a CT file is stored: int16, its first 3 slices
    air (``noise`` overrides), on a grid of ``spacing`` mm."""
    noise = {"dtype": np.int16, "air": 3, **noise}
    return save_nifti(path, noise_ct(shape, seed, **noise), grid_affine(spacing))


def ct_phantom(
    shape=(40, 36, 20),
    *,
    seed: int = 0,
    noise: float = 60.0,
    bone_hu: float = 700.0,
    body: float = 0.9,
    bone: float = 0.3,
) -> tuple[np.ndarray, np.ndarray]:
    """A CT phantom, ``(hu, labels)`` in ``(i, j, k)``, float32: air (−1000 HU, label 0), a
    ball of soft tissue (40 ± ``noise`` HU, label 1) and its core of bone (``bone_hu``,
    label 2); the radii ``body`` and ``bone`` are on a [−1, 1]³ grid."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    radius = np.sqrt((grid**2).sum(0))
    hu = np.full(shape, -1000.0, dtype=np.float32)
    labels = np.zeros(shape, dtype=np.float32)
    inside = radius < body
    hu[inside] = 40.0 + rng.normal(0, noise, size=int(inside.sum()))
    labels[inside] = 1
    hu[radius < bone] = bone_hu
    labels[radius < bone] = 2
    return hu, labels


def phantom_affine(spacing=PHANTOM_SPACING) -> np.ndarray:
    """The phantom's grid: ``spacing`` mm, its corner at :data:`PHANTOM_ORIGIN`."""
    return grid_affine(spacing, PHANTOM_ORIGIN)


def blob_case(seed: int, size: int = 24, max_label: int | None = None):
    """``(hu float32, labels uint8)``: MONAI's synthetic blobs (2 classes) as HU inside the
    tiny card's CT window; ``max_label`` written at voxel (0, 0, 0)."""
    from monai.data import create_test_image_3d

    img, seg = create_test_image_3d(
        size,
        size,
        size,
        num_objs=4,
        rad_max=6,
        rad_min=3,
        num_seg_classes=2,
        noise_max=0.1,
        random_state=np.random.RandomState(seed),
    )
    hu = (img * 400.0 - 175.0).astype(np.float32)  # inside the card's CT window
    seg = seg.astype(np.uint8)
    if max_label is not None:
        seg[0, 0, 0] = max_label
    return hu, seg


def write_case(folder: Path, name: str, seed: int, max_label: int | None = None) -> dict:
    """:func:`blob_case` saved as ``{name}_img.nii.gz`` and ``{name}_lab.nii.gz``; its
    datalist entry."""
    hu, seg = blob_case(seed, max_label=max_label)
    save_nifti(folder / f"{name}_img.nii.gz", hu)
    save_nifti(folder / f"{name}_lab.nii.gz", seg)
    return {"image": f"{name}_img.nii.gz", "label": f"{name}_lab.nii.gz"}


#: Scale and offset of each synthetic MRI channel (arbitrary units that differ per channel).
MRI_UNITS = ((900.0, 100.0), (40.0, -7.0), (3.0, 0.5), (250.0, 1000.0))


def mri_case(seed: int, channels: int = 4, size: int = 24) -> tuple[list[np.ndarray], np.ndarray]:
    """``([channel float32 …], labels uint8)``: :func:`blob_case`'s blobs seen by
    ``channels`` co-registered sequences, each in its own units (:data:`MRI_UNITS`) with its own
    noise."""
    hu, seg = blob_case(seed, size)
    rng = np.random.default_rng(seed)
    unit = (hu + 175.0) / 400.0
    arrays = [
        (unit * scale + offset + rng.normal(0, 0.05 * scale, unit.shape)).astype(np.float32)
        for scale, offset in MRI_UNITS[:channels]
    ]
    return arrays, seg


def write_mri_case(folder: Path, name: str, seed: int, layout: str, channels: int = 4) -> dict:
    """:func:`mri_case` saved as one 4D file (``layout="4d"``, channels last) or one file per
    channel (``"files"``: ``{name}_0000.nii.gz`` …), plus labels; its datalist entry."""
    arrays, seg = mri_case(seed, channels)
    save_nifti(folder / f"{name}_lab.nii.gz", seg)
    if layout == "4d":
        save_nifti(folder / f"{name}_img.nii.gz", np.stack(arrays, axis=-1))
        return {"image": f"{name}_img.nii.gz", "label": f"{name}_lab.nii.gz"}
    files = [f"{name}_{c:04d}.nii.gz" for c in range(channels)]
    for file, array in zip(files, arrays, strict=True):
        save_nifti(folder / file, array)
    return {"image": files, "label": f"{name}_lab.nii.gz"}


def write_datalist(folder: Path, cases: int = 3, training: int = 2) -> Path:
    """``folder/datalist.json`` over ``cases`` blob cases (seeds 0, 1, …): the first
    ``training`` for training, the rest for validation."""
    entries = [write_case(folder, f"case{i}", seed=i) for i in range(cases)]
    path = folder / "datalist.json"
    path.write_text(json.dumps({"training": entries[:training], "validation": entries[training:]}))
    return path


# ----------------------------------------------------------------------------- DCT bands
def band_of(index, sizes) -> str:
    """The band of a DCT index, exactly: r = mean of u/(n − 1) over the axes (0 on an axis of
    size 1), split in thirds."""
    r = sum(
        (Fraction(u, n - 1) if n > 1 else Fraction(0)) for u, n in zip(index, sizes, strict=True)
    )
    r /= len(sizes)
    if r < Fraction(1, 3):
        return "low"
    if r < Fraction(2, 3):
        return "middle"
    return "high"


def naive_band(block, band: str) -> np.ndarray:
    """The mask of ``band`` (``"all"``: every index) over a ``block`` (a side: a cube), one
    index at a time with :func:`band_of`."""
    block = (block,) * 3 if isinstance(block, int) else tuple(block)
    mask = np.zeros(block, dtype=bool)
    for index in itertools.product(*(range(b) for b in block)):
        mask[index] = band in ("all", band_of(index, block))
    return mask


def block_coefficients(volume: torch.Tensor, block=8) -> np.ndarray:
    """``[n_blocks, *block]`` orthonormal DCT-II of every block of ``volume`` ``[H, W, D]``
    (scipy, float64, one block at a time; a side: a cube, 8³ by default; a 2D block: every
    axial slice's squares)."""
    import scipy.fft

    block = (block,) * 3 if isinstance(block, int) else tuple(block)
    v = volume.detach().double().numpy()
    out = []
    if len(block) == 3:
        for i, j, k in itertools.product(
            *(range(0, n, b) for n, b in zip(v.shape, block, strict=True))
        ):
            cube = v[i : i + block[0], j : j + block[1], k : k + block[2]]
            out.append(scipy.fft.dctn(cube, type=2, norm="ortho"))
    else:
        for i, j, k in itertools.product(range(0, v.shape[0], block[0]),
                                         range(0, v.shape[1], block[1]), range(v.shape[2])):  # fmt: skip
            square = v[i : i + block[0], j : j + block[1], k]
            out.append(scipy.fft.dctn(square, type=2, norm="ortho"))
    return np.stack(out)


# ----------------------------------------------------------------------------- jobs and widgets
def drain(gen: Generator, on_event: Callable[[Any], None] | None = None) -> tuple[list, Any]:
    """Run a generator job to its end, sending None: ``(its events, its return value)``;
    ``on_event(event)`` sees each event as it comes."""
    from vafa.attacks import drive

    events: list = []

    def record(event) -> None:
        events.append(event)
        if on_event is not None:
            on_event(event)

    return events, drive(gen, record)


def shown(control) -> bool:
    """Not hidden by its widget (whether or not the window is on screen)."""
    return not control.native.isHidden()


def run_and_wait(qtbot, widget, timeout: int, locked=()) -> None:
    """Click Run, check the widget is running (Run off, Cancel on, each control named in
    ``locked`` off), and wait up to ``timeout`` ms for the run to end."""
    widget.run_button.native.click()
    assert widget.is_running and not widget.run_button.enabled and widget.cancel_button.enabled
    assert not [name for name in locked if getattr(widget, name).enabled]
    qtbot.waitUntil(lambda: not widget.is_running, timeout=timeout)


def run_vafa(*argv, world: int = 1, script=None, timeout: float = 300, **run):
    """``python -m vafa ARGV`` in a subprocess, as scripts and users run it (text output
    captured); ``world`` > 1: under ``torchrun`` with that many processes; ``script``: that
    file instead of ``-m vafa``; ``run``: more of ``subprocess.run``'s keywords (cwd, env)."""
    from distributed_launch import torchrun

    program = ["-m", "vafa"] if script is None else [str(script)]
    command = torchrun(world, *program) if world > 1 else [sys.executable, *program]
    command += map(str, argv)
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, **run)


# ----------------------------------------------------------------------------- results
def read_csv_rows(path: Path, drop=()) -> list[dict[str, str]]:
    """The rows of a CSV file, without the columns in ``drop``."""
    with open(path, newline="", encoding="utf-8") as f:
        return [{k: v for k, v in row.items() if k not in drop} for row in csv.DictReader(f)]


def file_digest(path) -> str:
    """SHA-256 of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def non_blank(path) -> bool:
    """A colour picture with some contrast (not one flat colour)."""
    import matplotlib.image

    pixels = matplotlib.image.imread(path)
    return pixels.ndim == 3 and float(pixels[..., :3].std()) > 0.02


def run_cli(argv, capsys) -> tuple[int, str, str]:
    """``vafa`` in this process (:func:`vafa.cli.main`) on ``argv`` (each made a str):
    ``(exit status, stdout, stderr)``."""
    from vafa.cli import main

    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ----------------------------------------------------------------------------- sigmoid regions
#: MONAI's BraTS regions (label values each covers) and their order as model outputs.
BRATS = {"TC": [1, 4], "WT": [1, 2, 4], "ET": [4]}
BRATS_NAMES = ("TC", "WT", "ET")


def threshold_model() -> torch.nn.Module:
    """Three sigmoid regions nested like BraTS' (ET ⊂ TC ⊂ WT): region k is where the 3×3×3
    mean intensity exceeds 0.5 (TC), 0.35 (WT), 0.65 (ET); logits 20·(mean − c_k)."""
    conv = torch.nn.Conv3d(1, 3, 3, padding=1)
    with torch.no_grad():
        conv.weight.fill_(20.0 / 27)
        conv.bias.copy_(torch.tensor([-0.5, -0.35, -0.65]) * 20)
    return conv.eval()


def region_problem(model=None):
    """``(model, x [1, 1, 16³] in [0, 1], labels 0/1/2/4)``: :func:`threshold_model` (or
    ``model``) on smooth noise, the labels being what it predicts, merged."""
    from vafa.ops.heads import Heads

    heads = Heads.from_outputs({"activation": "sigmoid", "regions": BRATS}, BRATS_NAMES)
    model = threshold_model() if model is None else model
    g = torch.Generator().manual_seed(1)
    x = torch.nn.functional.avg_pool3d(torch.rand(1, 1, 17, 17, 17, generator=g), 2, 1)
    x = (x - x.min()) / (x.max() - x.min())
    with torch.no_grad():
        labels = heads.merge(heads.predict(model(x)))  # 0/1/2/4, what the model predicts
    return model, x, labels
