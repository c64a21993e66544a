"""The 3D Slicer CLI modules, checked without the Slicer application.

* The XML written by ``vafa slicer install`` parses with ctk-cli (a pure-Python reader of the
  Slicer Execution Model) and obeys the rules of Slicer's ModuleDescriptionParser.
* A harness builds each module's argument list the way Slicer does from that XML (flagged
  parameters in XML order as ``--longflag value``, booleans as a bare flag when true, empty
  values left out, then the indexed ones, images as temporary files named by their first
  file extension, ``--returnparameterfile`` when there are return parameters), runs the
  installed executable on the bundled CT, and checks progress, return values and outputs.
* The outputs are read back with Slicer's own reader (``vtkMRMLVolumeArchetypeStorageNode``
  from the slicer-core package): their IJK→RAS equals the input's; predictions read as label
  maps.

Running a module headless through slicer-core's ``vtkSlicerCLIModuleLogic`` was investigated:
the logic needs a ``ModuleDescription`` registered on the node, which only C++ can build
(``vtkMRMLCommandLineModuleNode.GetNumberOfRegisteredModules()`` is 0 and no Python class makes
one), so the harness plays Slicer's part instead.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ctk_cli = pytest.importorskip("ctk_cli")
slicer_core = pytest.importorskip("slicer_core")

from vafa.io.data import sample_paths  # noqa: E402
from vafa.slicer.install import install  # noqa: E402

MODULES = ("VAFAAttack", "VAFAEvaluate", "VAFTFineTune")
LONGFLAG = re.compile(r"^[_A-Za-z][_A-Za-z0-9]*$")
IMAGE_TYPES = {"scalar", "label", "tensor", "diffusion-weighted", "vector", "model"}
TAGS = {
    "integer", "float", "double", "boolean", "string", "integer-vector", "float-vector",
    "double-vector", "string-vector", "integer-enumeration", "float-enumeration",
    "double-enumeration", "string-enumeration", "point", "pointfile", "region", "file",
    "directory", "image", "geometry", "transform", "table", "measurement",
}  # fmt: skip


@pytest.fixture(scope="module")
def modules(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("slicer-modules")
    install(folder)
    return folder


def _parameters(xml: Path) -> list:
    return [p for group in ctk_cli.CLIModule(str(xml)) for p in group]


# ----------------------------------------------------------------------------- the XML
@pytest.mark.parametrize("name", MODULES)
def test_xml_parses_and_follows_slicers_rules(modules, name):
    xml = modules / f"{name}.xml"
    module = ctk_cli.CLIModule(str(xml))
    assert module.title and module.description and module.category == "VAFA"
    names = set()
    for p in _parameters(xml):
        assert p.typ in TAGS, p.typ
        assert p.name not in names, f"duplicate {p.name}"
        names.add(p.name)
        if p.longflag is not None:
            assert LONGFLAG.match(p.longflag.lstrip("-")), p.longflag
        assert p.flag is None or len(p.flag.lstrip("-")) == 1
        assert not (p.index is not None and (p.longflag or p.flag)), f"{p.name}: index and flag"
        if p.index is None and not (p.longflag or p.flag):
            assert p.channel == "output", f"{p.name}: neither flag nor index, not a return"
        if p.typ == "image":
            assert p.channel in ("input", "output") and p.fileExtensions
        if p.elements:
            assert p.default in p.elements, f"{p.name}: default {p.default!r} not offered"
    indices = sorted(p.index for p in _parameters(xml) if p.index is not None)
    assert indices == list(range(len(indices)))


def test_xml_carries_every_attack_option_of_the_schema(modules):
    from vafa.attacks import ATTACKS

    xml = modules / "VAFAAttack.xml"
    offered = {p.name for p in _parameters(xml)}
    schema = {o.name for cls in ATTACKS.values() for o in cls.options if o.cli_flags}
    assert schema <= offered
    groups = ctk_cli.CLIModule(str(xml))  # volumes, multi-channel models, model, attack, then:
    first_group = [p.name for p in groups[4]]
    assert {"q_min", "q_max", "steps", "block_size"} <= set(first_group)


@pytest.mark.parametrize("name", MODULES)
def test_executable_answers_xml_fast_without_python(modules, name):
    start = time.perf_counter()
    done = subprocess.run([str(modules / name), "--xml"], capture_output=True, timeout=5)
    assert time.perf_counter() - start < 5
    assert done.returncode == 0 and done.stderr == b""
    assert (
        done.stdout.startswith(b"<?xml") and done.stdout == (modules / f"{name}.xml").read_bytes()
    )


def test_install_refuses_to_overwrite_and_writes_windows_batch_files(tmp_path):
    install(tmp_path)
    with pytest.raises(FileExistsError):
        install(tmp_path)
    written = install(tmp_path / "win", windows=True, python=r"C:\Python\python.exe")
    bat = (tmp_path / "win" / "VAFAAttack.bat").read_text()
    assert tmp_path / "win" / "VAFAAttack.bat" in written
    assert '"C:\\Python\\python.exe" -m vafa.slicer VAFAAttack %*' in bat and "--xml" in bat


# ----------------------------------------------------------------------------- Slicer's part
def slicer_argv(xml: Path, values: dict, tmp: Path) -> tuple[list[str], Path | None]:
    """The argument list Slicer builds from ``xml`` for the parameter ``values`` (defaults for
    the rest), and the return parameter file when the module has return parameters."""
    flagged, indexed, returns = [], {}, False
    for p in _parameters(xml):
        value = values.get(p.name, p.default)
        if p.index is not None:
            indexed[p.index] = str(value)
            continue
        if not (p.longflag or p.flag):
            returns = returns or p.channel == "output"
            continue
        flag = p.longflag or p.flag
        flag = flag if flag.startswith("-") else ("--" if p.longflag else "-") + flag
        if p.typ == "boolean":
            if value in (True, "true"):
                flagged.append(flag)
        elif value is not None and str(value) != "":
            flagged += [flag, str(value)]
    argv = flagged + [indexed[i] for i in sorted(indexed)]
    params = tmp / "ret.params" if returns else None
    if params is not None:
        argv += ["--returnparameterfile", str(params)]
    return argv, params


def _image_file(source: Path, tmp: Path, letters: str) -> Path:
    """Slicer hands images over as ``<tmp>/<letters>.<first file extension>``."""
    target = tmp / f"{letters}.nii.gz"
    shutil.copyfile(source, target)
    return target


def run_module(modules: Path, name: str, values: dict, tmp: Path):
    argv, params = slicer_argv(modules / f"{name}.xml", values, tmp)
    done = subprocess.run([str(modules / name), *argv], capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    progress = [float(x) for x in re.findall(r"<filter-progress>([^<]*)</filter-progress>",
                                             done.stdout)]  # fmt: skip
    returned = {}
    if params is not None and params.exists():
        for line in params.read_text().splitlines():
            key, value = (s.strip() for s in line.split("=", 1))
            try:
                returned[key] = float(value)
            except ValueError:  # a string parameter (the attack kept)
                returned[key] = value
    return done, progress, returned


def read_with_slicer(path: Path, label: bool):
    """``(IJK→RAS 4×4, scalar type name)`` as Slicer's volume storage node reads ``path``."""
    kind = slicer_core.vtkMRMLLabelMapVolumeNode if label else slicer_core.vtkMRMLScalarVolumeNode
    ijk_to_ras, node = read_node_with_slicer(path, kind)
    return ijk_to_ras, node.GetImageData().GetScalarTypeAsString()


def read_node_with_slicer(path: Path, kind):
    """``(IJK→RAS 4×4, node)``: ``path`` read by Slicer's volume storage node into a new
    ``kind`` node (e.g. ``vtkMRMLVectorVolumeNode``)."""
    import vtk

    scene = slicer_core.vtkMRMLScene()
    node = kind()
    scene.AddNode(node)
    storage = slicer_core.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    scene.AddNode(storage)
    assert storage.ReadData(node) == 1, path
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    ijk_to_ras = np.array([[matrix.GetElement(i, j) for j in range(4)] for i in range(4)])
    return ijk_to_ras, node


def _check_progress(progress: list[float]) -> None:
    assert progress and all(0.0 <= v <= 1.0 for v in progress)
    assert progress == sorted(progress) and progress[-1] == 1.0


@pytest.mark.slow
def test_attack_and_evaluate_modules_run_as_slicer_runs_them(modules, tmp_path):
    ct, labels = sample_paths()
    image = _image_file(ct, tmp_path, "aBcDeF")
    seg = _image_file(labels, tmp_path, "gHiJkL")
    out = {k: tmp_path / f"{k}.nii.gz" for k in
           ("adversarial", "perturbation", "clean_prediction", "adversarial_prediction")}  # fmt: skip
    values = {"input": image, "labels": seg, "steps": 2, **out}
    done, progress, returned = run_module(modules, "VAFAAttack", values, tmp_path)
    returned_attack = returned
    assert done.returncode == 0, done.stderr
    _check_progress(progress)
    assert "<filter-comment>" in done.stdout
    assert 0 < returned["dice_fg_adversarial"] <= returned["dice_fg_clean"] <= 1
    assert 0 < returned["ssim"] <= 1
    reference, _ = read_with_slicer(image, label=False)
    for key, path in out.items():
        label = key.endswith("prediction")
        ijk_to_ras, scalar = read_with_slicer(path, label=label)
        np.testing.assert_allclose(ijk_to_ras, reference, atol=1e-4)
        if label:
            assert scalar in ("unsigned char", "short"), scalar

    values = {"input": image, "labels": seg, "adversarial": out["adversarial"]}
    done, progress, returned = run_module(modules, "VAFAEvaluate", values, tmp_path)
    assert done.returncode == 0, done.stderr
    _check_progress(progress)
    assert returned["dice_fg"] == pytest.approx(returned_attack["dice_fg_clean"], abs=1e-6)
    assert returned["dice_fg_adversarial"] < returned["dice_fg"] and returned["hd95"] > 0


def test_bad_inputs_end_with_one_line_and_no_output(modules, tmp_path):
    ct, _ = sample_paths()
    image = _image_file(ct, tmp_path, "aBcDeF")
    adversarial = tmp_path / "adv.nii.gz"
    values = {"input": image, "model": "file", "weights": tmp_path / "missing.safetensors",
              "adversarial": adversarial}  # fmt: skip
    done, _, _ = run_module(modules, "VAFAAttack", values, tmp_path)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert "missing.safetensors" in done.stderr and "Traceback" not in done.stderr
    assert not adversarial.exists()

    import nibabel as nib

    wrong = tmp_path / "wrong.nii.gz"  # labels on another grid
    nib.save(nib.Nifti1Image(np.zeros((10, 10, 10), np.uint8), np.eye(4)), wrong)
    done, _, returned = run_module(modules, "VAFAEvaluate", {"input": image, "labels": wrong},
                                   tmp_path)  # fmt: skip
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "Traceback" not in done.stderr and returned == {}
    assert not (tmp_path / "ret.params").exists()


@pytest.mark.slow
def test_vaft_module_fine_tunes_and_writes_weights_with_their_card(modules, tmp_path):
    from vafa.io.checkpoints import load_model

    ct, labels = sample_paths()
    weights = tmp_path / "tuned.safetensors"
    values = {"input": _image_file(ct, tmp_path, "aBcDeF"),
              "labels": _image_file(labels, tmp_path, "gHiJkL"), "output_weights": weights,
              "epochs": 1, "iterations_per_epoch": 2, "batch_size": 1, "patch": 64, "steps": 1,
              "validation_steps": 1}  # fmt: skip
    done, progress, returned = run_module(modules, "VAFTFineTune", values, tmp_path)
    assert done.returncode == 0, done.stderr
    _check_progress(progress)
    _, card = load_model(weights, device="cpu")
    assert card.training["mode"] == "vafa-fr" and card.training["iterations_done"] == 2
    assert 0 <= returned["val_dice_fg_adversarial"] <= 1
    assert sorted(p.name for p in weights.parent.iterdir() if p.name.startswith("tuned")) == [
        "tuned.safetensors",
        "tuned.safetensors.json",
    ]  # the weights and their card, nothing else of the run in the user's folder


def test_module_process_without_a_module_name_is_one_line():
    done = subprocess.run([sys.executable, "-m", "vafa.slicer"], capture_output=True, text=True)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1


# ----------------------------------------------------------------------------- called by hand
@pytest.mark.parametrize("name", MODULES)
def test_parameters_left_out_take_the_xml_default(modules, name):
    from vafa.slicer.modules import MODULES as BUILDERS
    from vafa.slicer.run import parse

    params = _parameters(modules / f"{name}.xml")
    positional = [f"in{p.index}.nii.gz" for p in sorted(
        (p for p in params if p.index is not None), key=lambda p: p.index)]  # fmt: skip
    args = parse(BUILDERS[name](), positional)
    for p in params:
        if p.index is None and (p.longflag or p.flag):
            expected = False if p.typ == "boolean" and p.default is None else p.default
            assert getattr(args, p.name) == expected, p.name


def test_attack_module_called_by_hand_with_few_parameters_runs(modules, tmp_path):
    """Scripts and ``slicer.cli.run`` with partial parameters leave most of them out (no
    --attack, --model, --device, --seed…); Slicer itself always passes them."""
    ct, _ = sample_paths()
    image = _image_file(ct, tmp_path, "aBcDeF")
    adversarial = tmp_path / "adversarial.nii.gz"
    argv = [str(modules / "VAFAAttack"), str(image), "--adversarial", str(adversarial),
            "--steps", "1"]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "attacking with VAFA" in done.stdout  # the XML's default attack
    reference, _ = read_with_slicer(image, label=False)
    ijk_to_ras, _ = read_with_slicer(adversarial, label=False)
    np.testing.assert_allclose(ijk_to_ras, reference, atol=1e-4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["aBcDeF.nii.gz", "adversarial.nii.gz"]


def test_attack_module_runs_the_worst_case_through_the_sliding_window(modules, tmp_path):
    ct, labels = sample_paths()
    image = _image_file(ct, tmp_path, "aBcDeF")
    seg = _image_file(labels, tmp_path, "gHiJkL")
    adversarial = tmp_path / "adversarial.nii.gz"
    values = {"input": image, "labels": seg, "adversarial": adversarial, "steps": 1,
              "attack": "worst-case", "floor": 1.0, "through": "sliding-window"}  # fmt: skip
    done, _, returned = run_module(modules, "VAFAAttack", values, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "attacking with worst-case" in done.stdout
    assert returned["winner"] == "SA2"  # floor 1: the first, cheapest member ends the case
    assert returned["dice_fg_adversarial"] <= returned["dice_fg_clean"]
    assert adversarial.exists()


# ----------------------------------------------------------------------------- lesson outputs
PICTURES = ("dct_clean", "dct_adversarial", "q_table")


def test_attack_module_writes_the_dct_pictures_and_q_table_when_asked(modules, tmp_path):
    import nibabel as nib

    from vafa.io.data import load_demo_model
    from vafa.io.intensity import mapping_from_dict
    from vafa.io.volume import load_volume
    from vafa.report.figures import dct_log_magnitude

    declared = {p.name: p for p in _parameters(modules / "VAFAAttack.xml")}
    for name in PICTURES:  # optional image outputs: empty = not written
        p = declared[name]
        assert p.typ == "image" and p.channel == "output" and p.default is None
        assert p.longflag and p.index is None and "empty: not written" in p.description

    ct, _ = sample_paths()
    image = _image_file(ct, tmp_path, "aBcDeF")
    out = {k: tmp_path / f"{k}.nii.gz" for k in ("adversarial", *PICTURES)}
    done, _, _ = run_module(modules, "VAFAAttack", {"input": image, "steps": 1, **out}, tmp_path)
    assert done.returncode == 0, done.stderr
    assert not [p.name for p in tmp_path.iterdir() if ".partial" in p.name]
    reference, _ = read_with_slicer(image, label=False)
    for path in out.values():
        ijk_to_ras, scalar = read_with_slicer(path, label=False)
        np.testing.assert_allclose(ijk_to_ras, reference, atol=1e-4)
        assert scalar == "float" and nib.load(path).shape == nib.load(image).shape
    volume = load_volume(image)
    _, card = load_demo_model(device="cpu")
    clean01 = mapping_from_dict(card.intensity).fit(volume.array).forward(volume.array)
    dct_clean = nib.load(out["dct_clean"]).get_fdata()
    np.testing.assert_allclose(dct_clean, dct_log_magnitude(clean01, 32), atol=1e-4)
    assert not np.allclose(nib.load(out["dct_adversarial"]).get_fdata(), dct_clean)
    q = nib.load(out["q_table"]).get_fdata()
    assert q.max() <= 20 and q.min() >= 0 and (q >= 5).mean() > 0.5  # q_min 5, q_max 20

    # left empty (as Slicer leaves an output out): not written
    adversarial = tmp_path / "again.nii.gz"
    values = {"input": image, "steps": 1, "adversarial": adversarial,
              **{name: "" for name in PICTURES}}  # fmt: skip
    before = set(tmp_path.iterdir())
    done, _, _ = run_module(modules, "VAFAAttack", values, tmp_path)
    assert done.returncode == 0, done.stderr
    assert set(tmp_path.iterdir()) - before == {adversarial}


def test_attack_module_refuses_a_q_table_of_an_attack_without_one(modules, tmp_path):
    ct, _ = sample_paths()
    image = _image_file(ct, tmp_path, "aBcDeF")
    out = {"adversarial": tmp_path / "adv.nii.gz", "q_table": tmp_path / "q.nii.gz"}
    values = {"input": image, "attack": "pgd", "steps": 1, **out}
    done, _, _ = run_module(modules, "VAFAAttack", values, tmp_path)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "q_table" in done.stderr and "Traceback" not in done.stderr
    assert not any(path.exists() for path in out.values())
