"""The Slicer attack and evaluate modules on a multi-channel model (issue 27).

The module scripts run as Slicer runs them (:mod:`tests.library.test_slicer`'s harness): a
4-channel input as four scalar volumes (the GUI's *Multi-channel models* group), or as the
vector volume a script may pass, written here by slicer-core exactly as Slicer's CLI logic
writes an input node (its default storage node, configured for data exchange). Outputs are read
back with Slicer's own reader; bad input ends with one line and nothing written.
"""

from __future__ import annotations

import shutil

import nibabel as nib
import numpy as np
import pytest

from tests.factories import grid_affine, mri_case, save_tiny_model, tiny_card, write_mri_case
from tests.library import test_slicer as harness
from tests.library.test_slicer import read_node_with_slicer, read_with_slicer, run_module

#: The installed modules (``test_slicer``'s fixture ``modules``, shared rather than repeated).
installed_modules = harness.modules

slicer_core = pytest.importorskip("slicer_core")

NAMES = ["T1c", "T1", "T2", "FLAIR"]
EXTRA = (2, 3, 4)
QUICK = {"steps": 2, "q_max": 20, "block_size": 8, "seed": 0, "device": "cpu"}
PERCENTILE = {"type": "percentile", "p_low": 1.0, "p_high": 99.0}


@pytest.fixture(scope="module")
def four_channel_weights(tmp_path_factory):
    """A tiny 4-channel UNet (random weights) with its card, percentile intensity per channel."""
    card = tiny_card(in_channels=4, channel_names=NAMES, intensity=PERCENTILE)
    return save_tiny_model(tmp_path_factory.mktemp("mri") / "mri.safetensors", card=card)


def _channel_files(tmp_path, seed: int = 0) -> list:
    """The case's four channels as Slicer hands scalar volumes over (letters, no digits)."""
    entry = write_mri_case(tmp_path / "case", "case", seed, "files")
    files = []
    for c, name in enumerate(entry["image"]):
        files.append(tmp_path / f"{'ABCD'[c]}cHaNnEl.nii.gz")
        shutil.copyfile(tmp_path / "case" / name, files[-1])
    return files


def _inputs(files) -> dict:
    return {"input": files[0], **{f"channel{c}": files[c - 1] for c in EXTRA}}


def _per_channel(tmp_path, name: str) -> dict:
    """``{name: path, name2: path, …}``: one output volume per channel."""
    return {f"{name}{c if c > 1 else ''}": tmp_path / f"{name}{c}.nii.gz" for c in (1, *EXTRA)}


def _check_changed_in_own_units(adversarial: np.ndarray, original: np.ndarray) -> None:
    change = np.abs(adversarial - original)
    assert 0 < change.max() < np.ptp(original)  # changed, by less than its range
    assert abs(adversarial.mean() - original.mean()) < 0.05 * np.ptp(original)  # its own units


@pytest.mark.slow
def test_attack_and_evaluate_modules_on_four_separate_channels(
    installed_modules, four_channel_weights, tmp_path
):
    files = _channel_files(tmp_path)
    out = {**_per_channel(tmp_path, "adversarial"), **_per_channel(tmp_path, "perturbation"),
           "clean_prediction": tmp_path / "clean.nii.gz"}  # fmt: skip
    values = {**_inputs(files), "model": "file", "weights": four_channel_weights, **QUICK, **out}
    done, _, returned = run_module(installed_modules, "VAFAAttack", values, tmp_path)
    assert done.returncode == 0, done.stderr
    assert 0 <= returned["dice_fg_adversarial"] <= 1 and 0 < returned["ssim"] <= 1
    reference, _ = read_with_slicer(files[0], label=False)
    for c, source in enumerate(files, start=1):
        suffix = c if c > 1 else ""
        adversarial = out[f"adversarial{suffix}"]
        ijk_to_ras, scalar = read_with_slicer(adversarial, label=False)
        np.testing.assert_allclose(ijk_to_ras, reference, atol=1e-4)  # the input grid
        assert scalar == "float"
        adv, original = nib.load(adversarial).get_fdata(), nib.load(source).get_fdata()
        _check_changed_in_own_units(adv, original)
        perturbation = nib.load(out[f"perturbation{suffix}"]).get_fdata()
        np.testing.assert_allclose(perturbation, adv - original, atol=1e-3 * np.ptp(original))
    ijk_to_ras, scalar = read_with_slicer(out["clean_prediction"], label=True)
    np.testing.assert_allclose(ijk_to_ras, reference, atol=1e-4)

    adversarial = {f"adversarial{c if c > 1 else ''}": out[f"adversarial{c if c > 1 else ''}"]
                   for c in (1, *EXTRA)}  # fmt: skip
    values = {**_inputs(files), "model": "file", "weights": four_channel_weights,
              "device": "cpu", **adversarial}  # fmt: skip
    done, _, evaluated = run_module(installed_modules, "VAFAEvaluate", values, tmp_path)
    assert done.returncode == 0, done.stderr
    assert evaluated["dice_fg_adversarial"] == pytest.approx(
        returned["dice_fg_adversarial"], abs=1e-6, nan_ok=True
    )  # no labels: both score against the clean prediction
    assert 0 < evaluated["ssim"] <= 1


@pytest.mark.slow
def test_attack_module_writes_every_channels_dct_pictures_and_q_table(
    installed_modules, four_channel_weights, tmp_path
):
    """A multi-channel model's DCT pictures and quantization tables: one scalar volume per
    channel on the input's grid (read by Slicer's reader); each channel's clean picture is the
    block DCT of that channel in its own fitted window."""
    from vafa.io.intensity import mapping_from_dict
    from vafa.report.figures import dct_log_magnitude

    files = _channel_files(tmp_path)
    out = {**_per_channel(tmp_path, "dct_clean"), **_per_channel(tmp_path, "dct_adversarial"),
           **_per_channel(tmp_path, "q_table")}  # fmt: skip
    values = {**_inputs(files), "model": "file", "weights": four_channel_weights, **QUICK, **out}
    done, _, _ = run_module(installed_modules, "VAFAAttack", values, tmp_path)
    assert done.returncode == 0, done.stderr
    reference, _ = read_with_slicer(files[0], label=False)
    tables = []
    for c, source in enumerate(files, start=1):
        suffix = c if c > 1 else ""
        for base in ("dct_clean", "dct_adversarial", "q_table"):
            ijk_to_ras, scalar = read_with_slicer(out[f"{base}{suffix}"], label=False)
            np.testing.assert_allclose(ijk_to_ras, reference, atol=1e-4)  # the input grid
            assert scalar == "float"
        original = nib.load(source).get_fdata(dtype=np.float32)
        clean01 = mapping_from_dict(PERCENTILE).fit(original).forward(original)
        clean = nib.load(out[f"dct_clean{suffix}"]).get_fdata()
        np.testing.assert_allclose(clean, dct_log_magnitude(clean01, 8), atol=1e-4)
        assert not np.allclose(nib.load(out[f"dct_adversarial{suffix}"]).get_fdata(), clean)
        q = nib.load(out[f"q_table{suffix}"]).get_fdata()
        assert q.min() >= 0 and q.max() <= 20 and (q >= 5).mean() > 0.5  # q_min 5, q_max 20
        tables.append(q)
    assert not all(np.array_equal(tables[0], q) for q in tables[1:])  # one table per channel


def _write_as_slicer_vector(arrays: list[np.ndarray], path) -> None:
    """Write the channels as Slicer writes a vector volume node for a CLI module."""
    import vtk
    from vtk.util import numpy_support

    scene = slicer_core.vtkMRMLScene()
    node = slicer_core.vtkMRMLVectorVolumeNode()
    scene.AddNode(node)
    image = vtk.vtkImageData()
    image.SetDimensions(*arrays[0].shape)
    image.AllocateScalars(vtk.VTK_FLOAT, len(arrays))
    voxels = np.stack(arrays, axis=-1).transpose(2, 1, 0, 3).reshape(-1, len(arrays))  # i fastest
    image.GetPointData().GetScalars().DeepCopy(numpy_support.numpy_to_vtk(voxels.copy()))
    node.SetAndObserveImageData(image)
    matrix = vtk.vtkMatrix4x4()
    for i, row in enumerate(grid_affine()):
        for j, value in enumerate(row):
            matrix.SetElement(i, j, value)
    node.SetIJKToRASMatrix(matrix)
    storage = node.CreateDefaultStorageNode()
    storage.ConfigureForDataExchange()
    scene.AddNode(storage)
    storage.SetFileName(str(path))
    assert storage.WriteData(node) == 1


def _read_vector_with_slicer(path) -> tuple[np.ndarray, np.ndarray]:
    """``(IJK→RAS, [C, I, J, K] array)`` as Slicer reads ``path`` into a vector volume node."""
    from vtk.util import numpy_support

    ijk_to_ras, node = read_node_with_slicer(path, slicer_core.vtkMRMLVectorVolumeNode)
    image = node.GetImageData()
    voxels = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    array = voxels.reshape(*image.GetDimensions()[::-1], -1).transpose(3, 2, 1, 0)
    return ijk_to_ras, array


@pytest.mark.slow
def test_attack_module_takes_a_vector_volume_from_a_script(
    installed_modules, four_channel_weights, tmp_path
):
    from vafa.io.intensity import mapping_from_dict
    from vafa.report.figures import dct_log_magnitude

    arrays, _ = mri_case(1)
    vector = tmp_path / "vEcToR.nii.gz"
    _write_as_slicer_vector(arrays, vector)
    assert nib.load(vector).shape == (*arrays[0].shape, 1, 4)  # Slicer's layout: (I, J, K, 1, C)
    out = {"adversarial": tmp_path / "adv.nii.gz", "perturbation": tmp_path / "pert.nii.gz",
           "dct_clean": tmp_path / "dct.nii.gz"}  # fmt: skip
    values = {"input": vector, "model": "file", "weights": four_channel_weights, **QUICK, **out}
    done, _, _ = run_module(installed_modules, "VAFAAttack", values, tmp_path)
    assert done.returncode == 0, done.stderr
    reference, original = _read_vector_with_slicer(vector)
    ijk_to_ras, adversarial = _read_vector_with_slicer(out["adversarial"])
    np.testing.assert_allclose(ijk_to_ras, reference, atol=1e-4)
    assert adversarial.shape == original.shape == (4, *arrays[0].shape)
    for c in range(4):
        np.testing.assert_allclose(original[c], arrays[c], rtol=1e-6)
        _check_changed_in_own_units(adversarial[c], original[c])
    _, perturbation = _read_vector_with_slicer(out["perturbation"])
    np.testing.assert_allclose(perturbation, adversarial - original, atol=1e-2)
    _, pictures = _read_vector_with_slicer(out["dct_clean"])  # one vector volume, as the input
    for c in range(4):
        clean01 = mapping_from_dict(PERCENTILE).fit(original[c]).forward(original[c])
        np.testing.assert_allclose(pictures[c], dct_log_magnitude(clean01, 8), atol=1e-4)


def _run_here(modules, name: str, values: dict, tmp, capsys):
    """The module's ``vafa.slicer.run.main`` on the argument list Slicer builds, in this
    process (the refusals come before any work: no module process to start); ``(done,
    returned)`` with ``done.returncode``/``done.stderr`` as :func:`run_module` gives them."""
    from types import SimpleNamespace

    from tests.library.test_slicer import slicer_argv
    from vafa.slicer.run import main

    argv, params = slicer_argv(modules / f"{name}.xml", values, tmp)
    code = main([name, *argv])
    done = SimpleNamespace(returncode=code, stderr=capsys.readouterr().err)
    return done, {} if params is None or not params.exists() else params.read_text()


def _refused(done, *words) -> None:
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "Traceback" not in done.stderr
    for word in words:
        assert word in done.stderr, (word, done.stderr)


@pytest.mark.slow
def test_channel_count_and_grids_that_do_not_fit_end_with_one_line(
    installed_modules, four_channel_weights, tmp_path, capsys
):
    files = _channel_files(tmp_path)
    out = _per_channel(tmp_path, "adversarial")
    model = {"model": "file", "weights": four_channel_weights, **QUICK}
    # the first as Slicer runs it (a process of its own), the others in this process
    for n, inputs in enumerate(({"input": files[0], "channel2": files[1]}, {"input": files[0]})):
        values = {**inputs, **model, **out}
        if n == 0:
            done, _, _ = run_module(installed_modules, "VAFAAttack", values, tmp_path)
        else:
            done, _ = _run_here(installed_modules, "VAFAAttack", values, tmp_path, capsys)
        _refused(done, "the model takes 4 channels (T1c, T1, T2, FLAIR)", "channel4")

    moved = grid_affine(origin=(0.0, 0.0, 5.0))
    other = tmp_path / "MoVeD.nii.gz"
    nib.save(nib.Nifti1Image(nib.load(files[2]).get_fdata().astype(np.float32), moved), other)
    values = {**_inputs(files), "channel3": other, **model, **out}
    done, _ = _run_here(installed_modules, "VAFAAttack", values, tmp_path, capsys)
    _refused(done, "different grids", "channel3")

    twice = {"adversarial": out["adversarial"], "dct_clean3": out["adversarial"]}
    done, _ = _run_here(installed_modules, "VAFAAttack", {**_inputs(files), **model, **twice},
                        tmp_path, capsys)  # fmt: skip
    _refused(done, "adversarial and dct_clean3 are the same file")

    values = {**_inputs(files), **model, "adversarial2": files[1]}  # the evaluate module too
    done, returned = _run_here(installed_modules, "VAFAEvaluate", values, tmp_path, capsys)
    _refused(done, "adversarial2", "adversarial")
    assert returned == {} and not (tmp_path / "ret.params").exists()
    assert not any(path.exists() for path in out.values())
