"""Reader, writer and sample data of the napari plugin (file-level and through a real viewer)."""

import nibabel as nib
import numpy as np
import pytest

from napari_vafa._reader import napari_get_reader
from napari_vafa._writer import write_image, write_labels
from vafa.io.data import sample_paths


def _nifti(tmp_path, name, array, affine=None, dtype=np.int16):
    affine = np.diag([0.8, 0.9, 2.5, 1.0]) if affine is None else affine
    affine[:3, 3] = [-10.0, 20.0, 5.0]
    img = nib.Nifti1Image(array.astype(dtype), affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=2)
    path = tmp_path / name
    nib.save(img, path)
    return path


@pytest.mark.parametrize("path", ["image.tif", "volume.nii.txt", 42, None, [], ["a.nii", "b.png"]])
def test_reader_declines_what_it_does_not_handle(path):
    assert napari_get_reader(path) is None


def test_reader_makes_image_and_labels_layers_in_kji_order(tmp_path):
    rng = np.random.default_rng(0)
    ct = _nifti(tmp_path, "ct.nii.gz", rng.integers(-1000, 1000, (7, 6, 5)))
    seg = _nifti(tmp_path, "organs.nii.gz", rng.integers(0, 4, (7, 6, 5)), dtype=np.uint8)
    ((img_data, img_kw, img_type),) = napari_get_reader(str(ct))(str(ct))
    ((seg_data, _, seg_type),) = napari_get_reader(str(seg))(str(seg))
    assert img_type == "image" and seg_type == "labels"
    assert img_data.shape == (5, 6, 7)
    assert img_kw["scale"] == pytest.approx((2.5, 0.9, 0.8))
    np.testing.assert_array_equal(img_data, np.transpose(nib.load(ct).get_fdata(), (2, 1, 0)))
    assert np.issubdtype(seg_data.dtype, np.integer)


def test_writer_round_trip_is_identical(tmp_path):
    rng = np.random.default_rng(1)
    affine = np.array([[0.0, -0.9, 0.0, 0], [0.8, 0.0, 0.0, 0], [0.0, 0.0, 2.5, 0], [0, 0, 0, 1.0]])
    ct = _nifti(tmp_path, "ct.nii.gz", rng.integers(-1000, 1000, (7, 6, 5)), affine=affine)
    seg = _nifti(tmp_path, "labels.nii.gz", rng.integers(0, 4, (7, 6, 5)), dtype=np.uint8)
    for src, writer in ((ct, write_image), (seg, write_labels)):
        ((data, kwargs, _),) = napari_get_reader(str(src))(str(src))
        out = tmp_path / f"out_{src.name}"
        written = writer(str(out), data, kwargs)
        assert written == [str(out)]
        a, b = nib.load(src), nib.load(out)
        np.testing.assert_array_equal(a.get_fdata(), b.get_fdata())
        np.testing.assert_allclose(a.affine, b.affine)
        assert int(b.header["sform_code"]) == 2 and int(b.header["qform_code"]) == 1


def test_writer_without_metadata_uses_scale_and_never_overwrites_its_source(tmp_path):
    data = np.zeros((4, 5, 6), dtype=np.float32)
    out = tmp_path / "plain.nii.gz"
    write_image(str(out), data, {"scale": (3.0, 2.0, 1.0), "translate": (0.0, 0.0, 0.0)})
    img = nib.load(out)
    assert img.shape == (6, 5, 4)
    np.testing.assert_allclose(img.header.get_zooms(), (1.0, 2.0, 3.0))
    src = _nifti(tmp_path, "src.nii.gz", np.ones((3, 3, 3)))
    ((layer_data, kwargs, _),) = napari_get_reader(str(src))(str(src))
    with pytest.raises(ValueError):
        write_image(str(src), layer_data, kwargs)
    assert nib.load(src).get_fdata().sum() == 27


@pytest.mark.gui
def test_sample_and_reader_through_a_real_viewer(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    layers = viewer.open_sample("napari-vafa", "abdominal_ct")
    assert [type(layer).__name__ for layer in layers] == ["Image", "Labels"]
    ct, seg = layers
    assert ct.data.shape == (112, 101, 122) and ct.scale.tolist() == [3.0, 3.0, 3.0]
    assert tuple(ct.contrast_limits) == (-175.0, 250.0)
    assert seg.data.max() == 13
    image_path, _ = sample_paths()
    opened = viewer.open(str(image_path), plugin="napari-vafa")
    np.testing.assert_array_equal(opened[0].data, ct.data)
    out = tmp_path / "saved.nii.gz"
    viewer.layers.selection = {seg}
    viewer.layers.save(str(out), selected=True, plugin="napari-vafa")
    np.testing.assert_array_equal(
        nib.load(out).get_fdata(), nib.load(sample_paths()[1]).get_fdata()
    )


def test_installed_manifest_validates():
    import subprocess
    import sys
    from pathlib import Path

    npe2 = Path(sys.executable).with_name("npe2")
    result = subprocess.run([str(npe2), "validate", "napari-vafa"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid" in result.stdout


# ----------------------------------------------------------------------------- not attackable
def _unattackable(tmp_path) -> dict:
    """NIfTI files napari can show but the attack cannot take: a NaN voxel, 2D, 4D."""
    rng = np.random.default_rng(2)
    volume = rng.normal(40, 60, (7, 6, 5)).astype(np.float32)
    volume[1, 2, 3] = np.nan
    series = rng.normal(40, 60, (7, 6, 5, 4)).astype(np.float32)
    img = nib.Nifti1Image(series, np.diag([0.8, 0.9, 2.5, 1.0]))
    img.header.set_zooms((0.8, 0.9, 2.5, 2.0))  # 2 s between frames
    nib.save(img, tmp_path / "series.nii.gz")
    return {
        "nan": _nifti(tmp_path, "nan.nii.gz", volume, dtype=np.float32),
        "2d": _nifti(tmp_path, "slice.nii.gz", volume[..., 0], dtype=np.float32),
        "4d": tmp_path / "series.nii.gz",
    }


def test_reader_shows_volumes_the_attack_cannot_take(tmp_path):
    import npe2

    npe2.PluginManager.instance().discover()  # what napari does at start-up
    paths = _unattackable(tmp_path)
    layers = {}
    for kind, path in paths.items():
        ((data, kwargs, layer_type),) = npe2.read(
            [str(path)], stack=False, plugin_name="napari-vafa"
        )
        layers[kind] = (np.asarray(data), kwargs, layer_type)
        assert layer_type == "image" and kwargs["name"] == path.name.removesuffix(".nii.gz")
        np.testing.assert_allclose(kwargs["metadata"]["affine"], nib.load(path).affine)
    data, kwargs, _ = layers["nan"]  # shown as it is: one NaN voxel, at (k, j, i)
    assert data.shape == (5, 6, 7) and kwargs["scale"] == pytest.approx((2.5, 0.9, 0.8))
    assert np.isnan(data[3, 2, 1]) and np.isnan(data).sum() == 1
    data, kwargs, _ = layers["2d"]  # a 2D image, (j, i)
    assert data.shape == (6, 7) and kwargs["scale"] == pytest.approx((0.9, 0.8))
    np.testing.assert_array_equal(data, nib.load(paths["2d"]).get_fdata().T)
    data, kwargs, _ = layers["4d"]  # time as the leading napari axis, then (k, j, i)
    assert data.shape == (4, 5, 6, 7) and kwargs["scale"] == pytest.approx((2.0, 2.5, 0.9, 0.8))
    series = nib.load(paths["4d"]).get_fdata()
    np.testing.assert_allclose(data[2], np.transpose(series[..., 2], (2, 1, 0)), rtol=1e-6)


@pytest.mark.gui
def test_volumes_the_attack_cannot_take_open_and_run_refuses_them_in_one_line(
    make_napari_viewer, tmp_path, errors
):
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-vafa", "VAFA attack")
    for kind, path in _unattackable(tmp_path).items():
        (layer,) = viewer.open(str(path), plugin="napari-vafa")
        assert type(layer).__name__ == "Image"
        assert layer.ndim == {"nan": 3, "2d": 2, "4d": 4}[kind]
        assert np.all(np.isfinite(layer.contrast_limits))
        widget.image_layer.value = layer
        count = len(errors)
        widget.run_button.native.click()
        assert len(errors) == count + 1, errors
        assert layer.name in errors[-1] and "\n" not in errors[-1]
        assert not widget.is_running and widget.run_button.enabled


def test_reader_still_reports_a_file_it_cannot_read(tmp_path):
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(ValueError, match="not a readable NIfTI"):
        napari_get_reader(str(broken))(str(broken))
