"""Shared fixtures: a tiny 3D segmentation model briefly trained on synthetic volumes, the
untrained tiny model (its card, the network, a saved file), a training datalist, synthetic
volumes; the tests' plain helpers are in factories.py."""

from __future__ import annotations

import factories
import pytest
import torch


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` run only where torch sees a CUDA GPU."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


@pytest.fixture(autouse=True, scope="session")
def _torch_threads():
    torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _no_frozen_objects_left():
    """The plugin keeps old objects frozen for a few idle seconds after a job
    (napari_vafa._gc); the next test starts with none frozen."""
    yield
    import sys

    module = sys.modules.get("napari_vafa._gc")
    if module is not None:
        module.unfreeze_now()


def _synthetic_batch(n: int, size: int, classes: int, seed: int):
    import numpy as np
    from monai.data import create_test_image_3d

    rng = np.random.RandomState(seed)
    images, labels = [], []
    for _ in range(n):
        img, seg = create_test_image_3d(
            size,
            size,
            size,
            num_objs=6,
            rad_max=8,
            rad_min=4,
            num_seg_classes=classes - 1,
            noise_max=0.2,
            random_state=rng,
        )
        images.append(torch.from_numpy(img).float().clamp(0, 1))
        labels.append(torch.from_numpy(seg).long())
    return torch.stack(images)[:, None], torch.stack(labels)[:, None]


@pytest.fixture(scope="session")
def synthetic_data():
    """``(images [2,1,32,32,32] in [0,1], labels [2,1,32,32,32] with classes 0..2)``."""
    return _synthetic_batch(2, 32, 3, seed=1)


@pytest.fixture(scope="session")
def trained_model():
    """A tiny MONAI UNet (3 classes) trained for a few seconds; returned in eval mode."""
    from monai.networks.nets import UNet

    from vafa.ops.losses import DiceCELoss

    torch.manual_seed(0)
    model = UNet(
        spatial_dims=3,
        in_channels=1,
        out_channels=3,
        channels=(8, 16, 32),
        strides=(2, 2),
        num_res_units=0,
    )
    images, labels = _synthetic_batch(8, 32, 3, seed=0)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    loss_fn = DiceCELoss()
    model.train()
    for i in range(60):
        idx = torch.tensor([(2 * i) % 8, (2 * i + 1) % 8])
        optimiser.zero_grad()
        loss_fn(model(images[idx]), labels[idx]).backward()
        optimiser.step()
    return model.eval()


@pytest.fixture(scope="module")
def mid_range(synthetic_data):
    """One synthetic volume in [0.3, 0.7] and its labels: an attack's [0, 1] clamp stays
    idle, so the DCT of its output is exactly what the attack made."""
    images, labels = synthetic_data
    return 0.3 + 0.4 * images[:1], labels[:1]


@pytest.fixture(scope="module")
def card():
    """The tiny UNet's card (:func:`factories.tiny_card`); a module may override it."""
    return factories.tiny_card()


@pytest.fixture(scope="module")
def model(card):
    """The network of ``card`` (seed 0), in eval mode."""
    return factories.tiny_model(card).eval()


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """A tiny UNet saved as safetensors + card (random weights, seed 0)."""
    return factories.save_tiny_model(tmp_path_factory.mktemp("model") / "tiny.safetensors")


@pytest.fixture(scope="module")
def datalist(tmp_path_factory):
    """A datalist of three blob cases: two for training, one for validation."""
    return factories.write_datalist(tmp_path_factory.mktemp("data"), cases=3, training=2)


@pytest.fixture
def errors(monkeypatch):
    """Error notifications the plugin's widgets show (still forwarded to napari)."""
    import napari_vafa._worker_widget as module

    shown: list[str] = []
    original = module.show_error

    def record(message):
        shown.append(str(message))
        original(message)

    monkeypatch.setattr(module, "show_error", record)
    return shown
