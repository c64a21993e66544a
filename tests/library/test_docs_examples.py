"""Every shell command and Python snippet of README.md and docs/*.md runs as written.

Each fenced ``bash`` or ``python`` block runs in a fresh folder (also ``$HOME``) with the
``vafa`` of this environment first on ``PATH``. An HTML comment right above a block (invisible
on GitHub) says how, as ``key=value`` pairs separated by ``;``:

* ``skip=<reason>`` (alone, the rest of the comment): the block is not run here (installs, downloads, GPUs, several nodes, or
  another test runs it with checks of its own); the reason is required;
* ``setup=<name>,…``: files the block expects, made by :data:`SETUPS` (the bundled sample under
  the documented names, a model file, a MONAI bundle and an nnU-Net v2 result folder at the
  documented paths, a datalist);
* ``append=<args>``: appended to every ``vafa`` command that takes them (the short version:
  ``--steps 1``…); several ``append`` are tried one by one;
* ``replace=<old> => <new>``: a textual change for the short version (repeatable);
* ``parse-only=<regex>``: ``vafa`` commands matching it are only parsed (their flags must
  exist), not run (e.g. a 23-minute report);
* ``drop=<regex>``: lines matching it are not run (what ``setup`` already made, e.g. a
  download), with ``setup`` standing in for them;
* ``expect=<path> <path> …``: files or folders the block promises; missing ones fail.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from factories import blob_case, grid_affine, mri_case, save_nifti, write_datalist
from model_folders import make_brats_bundle, make_tiny_bundle, make_tiny_nnunet

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUNNABLE = ("bash", "python")
KEYS = {"skip", "setup", "append", "replace", "parse-only", "drop", "expect"}
_BLOCK = re.compile(
    r"(?:<!--\s*docs-test:(?P<marker>.*?)-->\s*\n)?^```(?P<lang>\w*)\n(?P<code>.*?)^```",
    re.S | re.M,
)


@dataclass
class Block:
    """One fenced code block and the marker above it."""

    path: Path
    line: int
    lang: str
    code: str
    marker: dict[str, list[str]] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    def first(self, key: str) -> str | None:
        values = self.marker.get(key)
        return values[0] if values else None


def _marker(text: str | None) -> dict[str, list[str]]:
    text = (text or "").strip()
    if text.startswith("skip="):  # the reason is free text
        return {"skip": [text.removeprefix("skip=").strip()]}
    marker: dict[str, list[str]] = {}
    for part in filter(None, (p.strip() for p in (text or "").split(";"))):
        key, _, value = part.partition("=")
        marker.setdefault(key.strip(), []).append(value.strip())
    return marker


def blocks() -> list[Block]:
    found = []
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        for match in _BLOCK.finditer(text):
            line = text[: match.start("lang")].count("\n") + 1
            found.append(Block(path, line, match["lang"], match["code"], _marker(match["marker"])))
    return found


BLOCKS = blocks()
TO_RUN = [b for b in BLOCKS if b.lang in RUNNABLE and "skip" not in b.marker]


# ----------------------------------------------------------------------------- set-ups
def _sample(folder: Path) -> None:
    """The bundled CT sample and its labels as ``case.nii.gz``, ``case_seg.nii.gz``."""
    from vafa.io.data import sample_paths

    image, labels = sample_paths()
    shutil.copy(image, folder / "case.nii.gz")
    shutil.copy(labels, folder / "case_seg.nii.gz")


def _small_ct(folder: Path) -> None:
    """``ct.nii.gz``: a small CT (24³ voxels, HU) for the tiny bundle and nnU-Net models."""
    hu, _ = blob_case(0)
    save_nifti(folder / "ct.nii.gz", hu)


def _demo_model(folder: Path) -> None:
    """The bundled demo model as ``model.safetensors`` and ``m.safetensors`` (card beside)."""
    from vafa.io.data import demo_model_path

    weights = demo_model_path()
    for name in ("model", "m"):
        shutil.copy(weights, folder / f"{name}.safetensors")
        shutil.copy(f"{weights}.json", folder / f"{name}.safetensors.json")


def _unetr(folder: Path) -> None:
    """``unetr_synapse.pt``: the unetr-btcv preset with random weights (as the official
    checkpoint's keys) and one 96³ case at its spacing, ``img0035``/``label0035``."""
    import torch

    from vafa.io.models import build_model

    torch.manual_seed(0)
    torch.save(build_model("unetr-btcv").state_dict(), folder / "unetr_synapse.pt")
    rng = np.random.default_rng(0)
    affine = np.diag([1.5, 1.5, 2.0, 1.0])
    save_nifti(
        folder / "img0035.nii.gz", rng.normal(40, 200, (96, 96, 96)).astype(np.float32), affine
    )
    save_nifti(
        folder / "label0035.nii.gz", rng.integers(0, 14, (96, 96, 96)).astype(np.uint8), affine
    )


def _model_folders(folder: Path) -> None:
    """A tiny MONAI bundle and a tiny nnU-Net v2 result folder at every path the docs use."""
    bundle = make_tiny_bundle(folder / "made", name="spleen_ct_segmentation")
    shutil.copytree(bundle, folder / "bundles" / "spleen_ct_segmentation")
    nnunet = make_tiny_nnunet(
        folder / "made", checkpoints=("checkpoint_final.pth", "checkpoint_best.pth")
    )
    for target in (
        "RESULTS/Dataset291_…/nnUNetTrainerNoMirroring__nnUNetPlans__3d_fullres",
        "…/nnUNetTrainer__nnUNetPlans__3d_fullres",
        ".totalsegmentator/nnunet/results/Dataset291_TotalSegmentator_part1_organs_1559subj/"
        "nnUNetTrainerNoMirroring__nnUNetPlans__3d_fullres",
    ):
        shutil.copytree(nnunet, folder / target)
    shutil.rmtree(folder / "made")


def _mri(folder: Path) -> None:
    """``t1c.nii.gz``, ``t1.nii.gz``, ``t2.nii.gz``, ``flair.nii.gz`` (a 24³ case, 1 mm) and a
    tiny MONAI BraTS bundle at ``bundles/brats_mri_segmentation``."""
    arrays, _ = mri_case(0)
    for name, array in zip(("t1c", "t1", "t2", "flair"), arrays, strict=True):
        save_nifti(folder / f"{name}.nii.gz", array, grid_affine((1.0, 1.0, 1.0)))
    bundle = make_brats_bundle(folder / "made")
    shutil.copytree(bundle, folder / "bundles" / "brats_mri_segmentation")
    shutil.rmtree(folder / "made")


def _datalist(folder: Path) -> None:
    """``data.json``: three small labelled cases (two training, one validation)."""
    write_datalist(folder).rename(folder / "data.json")


SETUPS = {
    "sample": _sample,
    "small-ct": _small_ct,
    "demo-model": _demo_model,
    "unetr": _unetr,
    "model-folders": _model_folders,
    "datalist": _datalist,
    "mri": _mri,
}


# ----------------------------------------------------------------------------- running
def _short(block: Block) -> str:
    code = block.code
    for rule in block.marker.get("replace", []):
        old, sep, new = rule.partition("=>")
        assert sep and old.strip() in code, f"{block.id}: replace={rule!r} matches nothing"
        code = code.replace(old.strip(), new.strip())
    return code


def _lines(code: str) -> list[str]:
    """Shell lines with continuations joined, comments and blank lines dropped."""
    joined = re.sub(r"\\\n\s*", " ", code)
    out = []
    for line in joined.splitlines():
        line = re.sub(r"(^|\s)#.*$", "", line).strip()
        if line:
            out.append(line)
    return out


def _vafa_argv(line: str) -> list[str] | None:
    words = shlex.split(line)
    if words[:1] == ["vafa"]:
        return words[1:]
    if words[:3] == [sys.executable, "-m", "vafa"] or words[1:3] == ["-m", "vafa"]:
        return words[3:]
    return None


def _shell(block: Block, folder: Path) -> str:
    """The script to run: dropped lines out, parse-only commands parsed, ``append`` added."""
    from vafa.cli import build_parser

    drop = [re.compile(p) for p in block.marker.get("drop", [])]
    parse_only = [re.compile(p) for p in block.marker.get("parse-only", [])]
    appends = [shlex.split(a) for a in block.marker.get("append", [])]
    script = []
    for line in _lines(_short(block)):
        if any(p.search(line) for p in drop):
            continue
        argv = _vafa_argv(line)
        if argv is not None and any(p.search(line) for p in parse_only):
            build_parser().parse_args(argv)  # SystemExit (exit 2) on a flag that does not exist
            continue
        for extra in appends if argv is not None else []:
            if _takes(argv, extra):
                argv = argv + extra
                line = f"{line} {shlex.join(extra)}"
        script.append(line)
    return "\n".join(script)


def _takes(argv: list[str], extra: list[str]) -> bool:
    """Whether ``vafa`` accepts ``argv`` followed by ``extra``."""
    from vafa.cli import build_parser

    try:
        with contextlib.redirect_stderr(io.StringIO()):
            build_parser().parse_args(argv + extra)
    except SystemExit:
        return False
    return True


def _environment(folder: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        HOME=str(folder),
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")])),
    )
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env["PATH"]])
    env.setdefault("QT_QPA_PLATFORM", "offscreen")
    return env


@pytest.mark.slow
@pytest.mark.parametrize("block", TO_RUN, ids=lambda b: b.id)
def test_the_documented_example_runs(block, tmp_path):
    for name in filter(None, ",".join(block.marker.get("setup", [])).split(",")):
        SETUPS[name.strip()](tmp_path)
    if block.lang == "python":
        command = [sys.executable, "-c", _short(block)]
    else:
        command = ["bash", "-e", "-o", "pipefail", "-c", _shell(block, tmp_path)]
    done = subprocess.run(
        command, cwd=tmp_path, env=_environment(tmp_path), capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, f"{block.id} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    missing = [
        p for p in " ".join(block.marker.get("expect", [])).split() if not (tmp_path / p).exists()
    ]
    assert not missing, f"{block.id} did not write {missing}"


# ----------------------------------------------------------------------------- the markers
def test_every_marker_is_valid_and_every_skip_says_why():
    for block in BLOCKS:
        unknown = set(block.marker) - KEYS
        assert not unknown, f"{block.id}: unknown docs-test key(s) {sorted(unknown)}"
        if "skip" in block.marker:
            assert len(block.first("skip") or "") > 10, f"{block.id}: skip needs a reason"
        for name in ",".join(block.marker.get("setup", [])).split(","):
            assert not name.strip() or name.strip() in SETUPS, f"{block.id}: no setup {name!r}"
        if block.marker:
            assert block.lang in RUNNABLE, f"{block.id}: a marker on a {block.lang!r} block"


def test_blocks_that_are_not_run_are_not_commands():
    """A block without a runnable language (output listings, BibTeX) holds no command."""
    for block in BLOCKS:
        if block.lang not in RUNNABLE:
            first = block.code.strip().split()[:1]
            assert first not in (["vafa"], ["python"], ["make"], ["pip"]), block.id


def test_the_docs_have_runnable_examples():
    assert len(TO_RUN) >= 6, [b.id for b in TO_RUN]
    assert {b.path.name for b in TO_RUN} >= {"README.md", "api.md", "cli.md"}
