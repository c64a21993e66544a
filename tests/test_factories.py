"""The shared helpers' parameters do what the tests that use them rely on."""

from __future__ import annotations

import nibabel as nib
import numpy as np
from factories import ct_phantom, drain, naive_band, noise_ct, write_noise_ct


def test_ct_phantom_labels_follow_its_tissues():
    hu, labels = ct_phantom((24, 20, 16), noise=30.0, body=0.4, bone=0.2, bone_hu=300.0)
    assert hu.shape == labels.shape == (24, 20, 16) and hu.dtype == labels.dtype == np.float32
    assert set(np.unique(labels)) == {0.0, 1.0, 2.0}
    assert (hu[labels == 0] == -1000).all() and (hu[labels == 2] == 300).all()
    assert abs(float(hu[labels == 1].mean()) - 40) < 10  # soft tissue, 40 ± 30 HU
    assert np.array_equal(ct_phantom(seed=1)[1], ct_phantom(seed=2)[1])  # the seed: noise only


def test_noise_ct_file_is_int16_with_air_slices(tmp_path):
    path = write_noise_ct(tmp_path / "sub" / "ct.nii.gz", (6, 5, 4), seed=3)
    image = nib.load(path)
    data = np.asarray(image.dataobj)
    assert image.get_data_dtype() == np.int16 and np.diag(image.affine).tolist() == [1.5, 1.5, 2, 1]
    assert (data[:3] == -1000).all() and np.array_equal(
        data[3:], noise_ct((6, 5, 4), 3)[3:].astype(np.int16)
    )


def test_naive_bands_partition_a_block_of_any_shape():
    for block in (8, (8, 8, 8), (4, 6), (5, 5, 3)):
        masks = [naive_band(block, band) for band in ("low", "middle", "high")]
        assert (sum(m.astype(int) for m in masks) == 1).all()
        assert naive_band(block, "all").all()
    assert np.array_equal(naive_band(8, "low"), naive_band((8, 8, 8), "low"))


def test_drain_returns_the_events_and_the_result_and_sends_none():
    sent = []

    def job():
        for i in range(3):
            sent.append((yield i))
        return "done"

    seen = []
    assert drain(job(), seen.append) == ([0, 1, 2], "done")
    assert seen == [0, 1, 2] and sent == [None, None, None]
