"""Tests for vafa.io.volume: NIfTI load/save (checked with nibabel directly) and resampling."""

from __future__ import annotations

import gzip
import os
import stat

import nibabel as nib
import numpy as np
import pytest

from vafa.io.volume import Volume, load_labels, load_volume, resample_like, resample_to, save_volume

AFFINE = np.array(
    [
        [-2.0, 0.0, 0.0, 90.0],
        [0.0, 2.0, 0.0, -120.0],
        [0.0, 0.0, 3.0, -70.0],
        [0.0, 0.0, 0.0, 1.0],
    ]
)


def _write(path, data, affine=AFFINE, qcode=1, scode=4, units=("mm", "sec"), slope=None):
    img = nib.Nifti1Image(data, affine)
    img.header.set_qform(affine, code=qcode)
    img.header.set_sform(affine, code=scode)
    img.header.set_xyzt_units(*units)
    if slope is not None:
        img.header.set_slope_inter(*slope)
    nib.save(img, str(path))
    return path


@pytest.fixture
def ct_file(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.integers(-1024, 2000, size=(12, 10, 8)).astype(np.int16)
    return _write(tmp_path / "ct.nii.gz", data)


def _world(affine, ijk):
    return (affine @ np.append(np.asarray(ijk, dtype=float), 1.0))[:3]


# ----------------------------------------------------------------------------- Volume


def test_volume_properties_and_spacing_of_rotated_affine():
    theta = np.deg2rad(30)
    rot = np.array(
        [[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]]
    )
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([0.7, 1.2, 2.5])
    vol = Volume(np.zeros((4, 5, 6), dtype=np.int16), affine)
    assert vol.array.dtype == np.float32
    assert vol.affine.dtype == np.float64
    assert vol.shape == (4, 5, 6)
    np.testing.assert_allclose(vol.spacing, (0.7, 1.2, 2.5))
    assert Volume(np.zeros((2, 2, 2)), AFFINE).orientation == "LAS"
    assert repr(vol).startswith("Volume(shape=(4, 5, 6), spacing=(0.7, 1.2, 2.5)")


@pytest.mark.parametrize(
    ("array", "affine", "error", "pattern"),
    [
        (np.zeros((4, 4)), AFFINE, ValueError, r"3D.*\(4, 4\)"),
        (np.zeros((4, 0, 4)), AFFINE, ValueError, "no empty axis"),
        (np.array([[[np.nan, np.inf, 1.0]]]), AFFINE, ValueError, "2 NaN/Inf"),
        (np.zeros((2, 2, 2), dtype=bool), AFFINE, TypeError, "numeric"),
        ([[[1.0]]], AFFINE, TypeError, "numeric numpy.ndarray"),
        (np.zeros((2, 2, 2)), np.eye(3), ValueError, "4x4"),
        (np.zeros((2, 2, 2)), np.diag([1.0, 0.0, 1.0, 1.0]), ValueError, "invertible"),
    ],
)
def test_volume_validation(array, affine, error, pattern):
    with pytest.raises(error, match=pattern):
        Volume(array, affine)


def test_with_array_same_grid_new_object(ct_file):
    vol = load_volume(ct_file)
    derived = vol.with_array(np.ones(vol.shape), dtype=np.uint8)
    assert derived.source is None
    assert derived.original_dtype == np.uint8
    np.testing.assert_array_equal(derived.affine, vol.affine)
    assert derived.header is not vol.header
    assert derived.header["sform_code"] == vol.header["sform_code"]
    derived.affine[0, 3] = 1e6  # not shared
    assert vol.affine[0, 3] == AFFINE[0, 3]
    with pytest.raises(ValueError, match=r"\(12, 10, 8\), got \(12, 10, 7\)"):
        vol.with_array(np.ones((12, 10, 7)))


# ----------------------------------------------------------------------------- load


def test_load_matches_nibabel(ct_file):
    vol = load_volume(str(ct_file))
    ref = nib.load(ct_file)
    np.testing.assert_array_equal(vol.array, ref.get_fdata())
    np.testing.assert_array_equal(vol.affine, ref.affine)
    assert vol.array.dtype == np.float32
    assert vol.original_dtype == np.int16
    assert vol.source == ct_file
    assert (int(vol.header["qform_code"]), int(vol.header["sform_code"])) == (1, 4)
    assert vol.header.get_xyzt_units() == ("mm", "sec")


def test_load_applies_scaling(tmp_path):
    data = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    path = _write(tmp_path / "scaled.nii", data, slope=(0.5, -10.0))
    np.testing.assert_array_equal(load_volume(path).array, data * 0.5 - 10.0)


@pytest.mark.parametrize("shape", [(5, 6, 7, 1), (5, 6, 7, 1, 1)])
def test_load_squeezes_singleton_extra_axes(tmp_path, shape):
    data = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    vol = load_volume(_write(tmp_path / "x.nii.gz", data))
    assert vol.shape == (5, 6, 7)
    np.testing.assert_array_equal(vol.array, data.reshape(5, 6, 7))


@pytest.mark.parametrize("shape", [(5, 6, 7, 2), (5, 6, 7, 1, 3), (5, 6)])
def test_load_refuses_non_3d(tmp_path, shape):
    path = _write(tmp_path / "x.nii.gz", np.zeros(shape, dtype=np.float32), affine=np.eye(4))
    with pytest.raises(ValueError, match=rf"x\.nii\.gz.*3D.*{shape[-1]}\)"):
        load_volume(path)


def test_load_refuses_zero_sized_axis(tmp_path):
    path = tmp_path / "empty.nii"
    img = nib.Nifti1Image(np.zeros((4, 4, 4), dtype=np.float32), np.eye(4))
    img.header.set_data_shape((4, 0, 4))
    img.header.set_data_dtype(np.float32)
    with open(path, "wb") as fh:  # header only: no voxels to write
        fh.write(img.header.binaryblock + b"\x00" * 4)
    with pytest.raises(ValueError, match=r"empty.nii.*empty.*\(4, 0, 4\)"):
        load_volume(path)


def test_load_refuses_nan_and_counts_them(tmp_path):
    data = np.zeros((3, 3, 3), dtype=np.float32)
    data[0, 0, 0] = np.nan
    data[1, 1, 1] = np.inf
    data[2, 2, 2] = -np.inf
    path = _write(tmp_path / "nan.nii.gz", data)
    with pytest.raises(ValueError, match=r"nan\.nii\.gz.*3 NaN/Inf"):
        load_volume(path)


def test_load_truncated_gzip(ct_file, tmp_path):
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(ct_file.read_bytes()[:-40])
    with pytest.raises(ValueError, match=r"truncated\.nii\.gz is not a readable NIfTI"):
        load_volume(truncated)


@pytest.mark.parametrize("name", ["notes.nii", "notes.nii.gz"])
def test_load_non_nifti_with_nifti_name(tmp_path, name):
    path = tmp_path / name
    path.write_text("this is not an image\n" * 30)
    with pytest.raises(ValueError, match=rf"{name.replace('.', '[.]')} is not a readable NIfTI"):
        load_volume(path)


def test_load_gzip_of_garbage(tmp_path):
    path = tmp_path / "garbage.nii.gz"
    path.write_bytes(gzip.compress(b"\x01" * 400))
    with pytest.raises(ValueError, match=r"garbage\.nii\.gz is not a readable NIfTI"):
        load_volume(path)


def test_load_missing_file_and_wrong_suffix(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing\.nii\.gz"):
        load_volume(tmp_path / "missing.nii.gz")
    with pytest.raises(ValueError, match=r"path must end in \.nii or \.nii\.gz, got .*scan\.mha"):
        load_volume(tmp_path / "scan.mha")


# ----------------------------------------------------------------------------- save


def test_save_float32_default_keeps_affine_codes_units(ct_file, tmp_path):
    vol = load_volume(ct_file)
    adv = vol.with_array(vol.array + 0.25)
    out = save_volume(adv, tmp_path / "adv.nii.gz")
    assert out == tmp_path / "adv.nii.gz"
    img = nib.load(out)
    assert img.get_data_dtype() == np.float32
    np.testing.assert_array_equal(np.asanyarray(img.dataobj), vol.array + 0.25)
    np.testing.assert_array_equal(img.affine, AFFINE)
    np.testing.assert_allclose(img.header.get_qform(), AFFINE, atol=1e-5)
    np.testing.assert_array_equal(img.header.get_sform(), AFFINE)
    assert (int(img.header["qform_code"]), int(img.header["sform_code"])) == (1, 4)
    assert img.header.get_xyzt_units() == ("mm", "sec")
    with gzip.open(out, "rb"):
        pass  # really gzip-compressed
    assert out.read_bytes()[4:8] == b"\x00\x00\x00\x00"  # gzip mtime fixed at 0


def test_save_integer_labels_raw_values(ct_file, tmp_path):
    vol = load_volume(ct_file)
    labels = vol.with_array((np.arange(vol.array.size) % 14).reshape(vol.shape).astype(np.float32))
    out = save_volume(labels, tmp_path / "labels.nii.gz", dtype=np.uint8)
    img = nib.load(out)
    assert img.get_data_dtype() == np.uint8
    raw = img.dataobj.get_unscaled()
    assert raw.dtype == np.uint8
    np.testing.assert_array_equal(raw, labels.array.astype(np.uint8))
    np.testing.assert_array_equal(np.asanyarray(img.dataobj), labels.array)


def test_save_int16_rounds_and_refuses_out_of_range(ct_file, tmp_path):
    vol = load_volume(ct_file)
    out = save_volume(vol.with_array(vol.array + 0.4), tmp_path / "hu.nii", dtype=np.int16)
    np.testing.assert_array_equal(
        nib.load(out).dataobj.get_unscaled(), np.asanyarray(nib.load(ct_file).dataobj)
    )
    too_big = vol.with_array(np.full(vol.shape, 40000.0))
    with pytest.raises(ValueError, match=r"int16.*40000"):
        save_volume(too_big, tmp_path / "big.nii.gz", dtype=np.int16)
    assert not (tmp_path / "big.nii.gz").exists()


def test_save_refuses_unsupported_dtype(ct_file, tmp_path):
    with pytest.raises(TypeError, match="dtype must be one of"):
        save_volume(load_volume(ct_file), tmp_path / "c.nii.gz", dtype=np.complex64)


def test_save_is_deterministic(ct_file, tmp_path):
    vol = load_volume(ct_file)
    a = save_volume(vol, tmp_path / "a.nii.gz", dtype=np.int16)
    b = save_volume(vol, tmp_path / "b.nii.gz", dtype=np.int16)
    assert a.read_bytes() == b.read_bytes()


def test_save_resampled_affine_keeps_codes(ct_file, tmp_path):
    vol = load_volume(ct_file)
    moved = AFFINE.copy()
    moved[:3, 3] += (1.5, -2.0, 4.0)
    moved[2, 2] = 2.0
    out = save_volume(Volume(vol.array, moved, vol.header), tmp_path / "m.nii.gz")
    img = nib.load(out)
    np.testing.assert_allclose(img.affine, moved, atol=1e-5)
    np.testing.assert_allclose(img.header.get_qform(), moved, atol=1e-5)
    assert (int(img.header["qform_code"]), int(img.header["sform_code"])) == (1, 4)
    np.testing.assert_allclose(img.header.get_zooms(), (2.0, 2.0, 2.0))


def test_save_without_header_uses_affine(tmp_path):
    vol = Volume(np.ones((3, 4, 5)), AFFINE)
    img = nib.load(save_volume(vol, tmp_path / "plain.nii"))
    np.testing.assert_allclose(img.affine, AFFINE)
    assert int(img.header["sform_code"]) > 0
    assert img.header.get_xyzt_units()[0] == "mm"


def test_save_refuses_source_protected_and_existing(ct_file, tmp_path):
    vol = load_volume(ct_file)
    before = ct_file.read_bytes()
    with pytest.raises(ValueError, match=r"ct\.nii\.gz.*input file"):
        save_volume(vol, ct_file, overwrite=True)
    derived = vol.with_array(vol.array)  # source None: protect names the input
    with pytest.raises(ValueError, match="input file"):
        save_volume(derived, str(ct_file), overwrite=True, protect=[ct_file])
    link = tmp_path / "link.nii.gz"
    link.symlink_to(ct_file)
    with pytest.raises(ValueError, match="input file"):
        save_volume(derived, link, overwrite=True, protect=[str(ct_file)])
    assert ct_file.read_bytes() == before
    target = tmp_path / "out.nii.gz"
    target.write_bytes(b"old")
    with pytest.raises(FileExistsError, match=r"out\.nii\.gz"):
        save_volume(derived, target)
    assert target.read_bytes() == b"old"
    save_volume(derived, target, overwrite=True)
    np.testing.assert_array_equal(nib.load(target).get_fdata(), vol.array)


def test_save_refuses_bad_suffix_and_missing_folder(ct_file, tmp_path):
    vol = load_volume(ct_file)
    with pytest.raises(ValueError, match=r"must end in \.nii or \.nii\.gz"):
        save_volume(vol, tmp_path / "out.nrrd")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        save_volume(vol, tmp_path / "nowhere" / "out.nii.gz")


def test_save_failure_leaves_nothing(ct_file, tmp_path, monkeypatch):
    vol = load_volume(ct_file)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    target = out_dir / "adv.nii.gz"
    target.write_bytes(b"previous")

    def broken_save(img, filename):
        with open(filename, "wb") as fh:
            fh.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(nib, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_volume(vol, target, overwrite=True)
    assert sorted(p.name for p in out_dir.iterdir()) == ["adv.nii.gz"]
    assert target.read_bytes() == b"previous"


def test_save_leaves_no_temp_files_and_normal_permissions(ct_file, tmp_path):
    out_dir = tmp_path / "o"
    out_dir.mkdir()
    out = save_volume(load_volume(ct_file), out_dir / "x.nii.gz")
    assert [p.name for p in out_dir.iterdir()] == ["x.nii.gz"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~umask


def test_save_load_round_trip_identical(ct_file, tmp_path):
    vol = load_volume(ct_file)
    again = load_volume(save_volume(vol, tmp_path / "rt.nii.gz"))
    np.testing.assert_array_equal(again.array, vol.array)
    np.testing.assert_array_equal(again.affine, vol.affine)


# ----------------------------------------------------------------------------- labels


@pytest.fixture
def image(ct_file):
    return load_volume(ct_file)


def _labels_file(tmp_path, data, affine=AFFINE, dtype=np.uint8):
    return _write(tmp_path / "labels.nii.gz", np.asarray(data).astype(dtype), affine=affine)


def test_load_labels_ok(image, tmp_path):
    data = np.random.default_rng(2).integers(0, 5, size=image.shape)
    labels = load_labels(_labels_file(tmp_path, data), like=image, max_classes=5)
    np.testing.assert_array_equal(labels.array, data)
    assert labels.original_dtype == np.uint8


def test_load_labels_shape_mismatch(image, tmp_path):
    path = _labels_file(tmp_path, np.zeros((12, 10, 9)))
    with pytest.raises(ValueError, match=r"labels.nii.gz.*\(12, 10, 8\), got \(12, 10, 9\)"):
        load_labels(path, like=image)


def test_load_labels_affine_tolerance(image, tmp_path):
    close = AFFINE.copy()
    close[0, 3] += 5e-4
    assert load_labels(_labels_file(tmp_path, np.zeros(image.shape), close), like=image)
    far = AFFINE.copy()
    far[0, 3] += 0.5
    path = _labels_file(tmp_path, np.zeros(image.shape), far)
    with pytest.raises(ValueError, match=r"labels\.nii\.gz.*affine"):
        load_labels(path, like=image)


def test_load_labels_value_errors(image, tmp_path):
    data = np.zeros(image.shape)
    data[0, 0, 0] = -1
    with pytest.raises(ValueError, match="non-negative, got minimum -1"):
        load_labels(_labels_file(tmp_path, data, dtype=np.int16), like=image)
    data[0, 0, 0] = 1.5
    with pytest.raises(ValueError, match="integers, got 1 non-integer"):
        load_labels(_labels_file(tmp_path, data, dtype=np.float32), like=image)
    data[0, 0, 0] = 14
    with pytest.raises(ValueError, match=r"labels.nii.gz.*max_classes=14, got maximum 14"):
        load_labels(_labels_file(tmp_path, data), like=image, max_classes=14)
    with pytest.raises(ValueError, match="max_classes must be a positive integer"):
        load_labels(_labels_file(tmp_path, data), like=image, max_classes=0)


# ----------------------------------------------------------------------------- resampling


def _smooth(world: np.ndarray) -> np.ndarray:
    x, y, z = world
    return np.sin(x / 15.0) + np.cos(y / 20.0) + 0.02 * z


def _smooth_volume() -> Volume:
    affine = np.array([[2.0, 0, 0, -30.0], [0, 2.5, 0, 10.0], [0, 0, 3.0, -20.0], [0, 0, 0, 1.0]])
    ijk = np.stack(np.meshgrid(*(np.arange(n) for n in (30, 24, 20)), indexing="ij"))
    world = np.einsum("ab,b...->a...", affine[:3, :3], ijk) + affine[:3, 3, None, None, None]
    return Volume(_smooth(world).astype(np.float32), affine)


def _values_match_world_function(vol: Volume, margin: int = 2, atol: float = 0.02) -> None:
    """Independent check of the affine: each voxel's value is the function at its world point."""
    ijk = np.stack(np.meshgrid(*(np.arange(n) for n in vol.shape), indexing="ij"))
    world = (
        np.einsum("ab,b...->a...", vol.affine[:3, :3], ijk) + vol.affine[:3, 3, None, None, None]
    )
    inner = (slice(margin, -margin),) * 3
    np.testing.assert_allclose(vol.array[inner], _smooth(world)[inner], rtol=0, atol=atol)


def test_resample_to_spacing_affine_and_values():
    vol = _smooth_volume()
    fine = resample_to(vol, spacing=(1.5, 1.5, 2.0))
    np.testing.assert_allclose(fine.spacing, (1.5, 1.5, 2.0), atol=1e-6)
    np.testing.assert_allclose(_world(fine.affine, (0, 0, 0)), _world(vol.affine, (0, 0, 0)))
    far_old = _world(vol.affine, np.array(vol.shape) - 1)
    far_new = _world(fine.affine, np.array(fine.shape) - 1)
    # the far corner moves by less than half an output voxel (the extent is rounded)
    assert np.all(np.abs(far_new - far_old) <= np.array([1.5, 1.5, 2.0]) / 2 + 1e-6)
    assert fine.source is None
    _values_match_world_function(fine)


def test_resample_round_trip_back_to_reference():
    vol = _smooth_volume()
    coarse = resample_to(vol, spacing=3.7)
    back = resample_like(coarse, vol)
    assert back.shape == vol.shape
    np.testing.assert_array_equal(back.affine, vol.affine)
    inner = (slice(2, -2),) * 3
    np.testing.assert_allclose(back.array[inner], vol.array[inner], rtol=0, atol=0.03)


def test_resample_to_orientation_flips_like_numpy():
    vol = _smooth_volume()  # RAS
    lps = resample_to(vol, orientation="LPS")
    assert lps.orientation == "LPS"
    np.testing.assert_array_equal(lps.array, vol.array[::-1, ::-1, :])
    np.testing.assert_allclose(_world(lps.affine, (0, 0, 0)), _world(vol.affine, (29, 23, 0)))
    back = resample_like(lps, vol)
    np.testing.assert_array_equal(back.array, vol.array)


def test_resample_unchanged_returns_same_object():
    vol = _smooth_volume()
    assert resample_to(vol) is vol
    assert resample_to(vol, spacing=(2.0005, 2.5, 3.0), orientation="ras") is vol
    assert resample_like(vol, vol) is vol


def test_resample_nearest_keeps_label_values():
    vol = _smooth_volume()
    labels = vol.with_array(np.digitize(vol.array, [-0.5, 0.5, 1.5]).astype(np.float32))
    fine = resample_to(labels, spacing=1.3, mode="nearest")
    assert set(np.unique(fine.array)) == set(np.unique(labels.array))
    back = resample_like(fine, labels, mode="nearest")
    assert np.mean(back.array == labels.array) > 0.97


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"spacing": (1, 2)}, "spacing must be one or three positive"),
        ({"spacing": -1.0}, "spacing must be one or three positive"),
        ({"orientation": "RAR"}, "orientation must be three axis codes"),
        ({"orientation": "XYZ"}, "orientation must be three axis codes"),
        ({"spacing": 1.0, "mode": "nearst"}, "did you mean 'nearest'"),
    ],
)
def test_resample_validation(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        resample_to(_smooth_volume(), **kwargs)
