"""``vafa.io.lpips``: LPIPS from local weight files, checked against a functional re-derivation.

No pretrained weights can be downloaded here, so the weights are random but saved in the
layouts users have on disk: torchvision's AlexNet checkpoint (``features.N.*`` plus a
classifier) with the ``lpips`` package's heads (``lin{n}.model.1.weight``), and a full
``lpips.LPIPS`` state dict (``net.slice{n}.N.*``, ``lins.{n}.*``).
"""

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch.nn import functional as F

from vafa.io.lpips import LPIPS, MIN_SLICE, load_lpips, volume_lpips

CONVS = {  # torchvision AlexNet features index: (out, in, kernel)
    0: (64, 3, 11),
    3: (192, 64, 5),
    6: (384, 192, 3),
    8: (256, 384, 3),
    10: (256, 256, 3),
}
SLICE_OF = {0: 1, 3: 2, 6: 3, 8: 4, 10: 5}  # lpips's slice{n} holding that conv


def _random_weights(seed=0):
    g = torch.Generator().manual_seed(seed)
    features = {}
    for index, (out, inp, k) in CONVS.items():
        features[f"features.{index}.weight"] = (
            torch.randn(out, inp, k, k, generator=g) * (2.0 / (inp * k * k)) ** 0.5
        )
        features[f"features.{index}.bias"] = torch.randn(out, generator=g) * 0.1
    heads = {
        f"lin{n}.model.1.weight": torch.rand(1, c, 1, 1, generator=g)
        for n, c in enumerate((64, 192, 384, 256, 256))
    }
    return features, heads


def _reference(features, heads, x, y):
    """LPIPS written out from the paper's definition with torch.nn.functional (no modules)."""
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)

    def taps(v):
        v = (v - shift) / scale
        out = []

        def conv(v, i, stride=1, pad=1):
            return F.relu(F.conv2d(v, features[f"features.{i}.weight"],
                                   features[f"features.{i}.bias"], stride=stride, padding=pad))  # fmt: skip

        v = conv(v, 0, stride=4, pad=2)
        out.append(v)
        v = conv(F.max_pool2d(v, 3, 2), 3, pad=2)
        out.append(v)
        v = conv(F.max_pool2d(v, 3, 2), 6)
        out.append(v)
        v = conv(v, 8)
        out.append(v)
        v = conv(v, 10)
        out.append(v)
        return out

    total = torch.zeros(x.shape[0], dtype=torch.float64)
    for n, (a, b) in enumerate(zip(taps(x), taps(y), strict=True)):
        a = a.double() / (a.double().pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        b = b.double() / (b.double().pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        w = heads[f"lin{n}.model.1.weight"].double().view(1, -1, 1, 1)
        total += ((a - b) ** 2 * w).sum(1).mean(dim=(1, 2))
    return total


@pytest.fixture(scope="module")
def weight_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lpips")
    features, heads = _random_weights()
    tv = {
        **features,
        "classifier.1.weight": torch.zeros(4, 9216),
        "classifier.1.bias": torch.zeros(4),
    }
    torch.save(tv, folder / "alexnet-owt.pth")
    torch.save(heads, folder / "alex.pth")
    full = {f"net.slice{SLICE_OF[int(k.split('.')[1])]}.{k.split('.', 1)[1]}": v
            for k, v in features.items()}  # fmt: skip
    full.update({k.replace("lin", "lins.", 1): v for k, v in heads.items()})
    full["scaling_layer.shift"] = torch.zeros(1, 3, 1, 1)
    save_file(full, str(folder / "lpips_full.safetensors"))
    return folder, features, heads


def _images(n=3, size=48, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size, size + 8, generator=g) * 2 - 1
    y = (x + 0.3 * torch.randn(x.shape, generator=g)).clamp(-1, 1)
    return x, y


def test_matches_the_functional_definition(weight_files):
    folder, features, heads = weight_files
    metric = load_lpips([folder / "alexnet-owt.pth", folder / "alex.pth"])
    x, y = _images()
    got = metric(x, y)
    assert got.shape == (3,)
    np.testing.assert_allclose(got.double(), _reference(features, heads, x, y), rtol=1e-4)
    assert torch.all(got > 0)


def test_one_file_with_everything_gives_the_same_metric(weight_files, tmp_path):
    folder, *_ = weight_files
    split = load_lpips([folder / "alexnet-owt.pth", folder / "alex.pth"])
    full = load_lpips(folder / "lpips_full.safetensors")
    x, y = _images(seed=4)
    torch.testing.assert_close(full(x, y), split(x, y))
    # and this class's own state dict round-trips through safetensors
    save_file(split.state_dict(), str(tmp_path / "ours.safetensors"))
    torch.testing.assert_close(load_lpips(tmp_path / "ours.safetensors")(x, y), split(x, y))


def test_distance_properties(weight_files):
    folder, *_ = weight_files
    metric = load_lpips(folder / "lpips_full.safetensors")
    x, y = _images(seed=2)
    assert torch.all(metric(x, x) == 0)
    torch.testing.assert_close(metric(x, y), metric(y, x))
    g = torch.Generator().manual_seed(3)
    noise = torch.randn(x.shape, generator=g)
    small = metric(x, (x + 0.01 * noise).clamp(-1, 1))
    large = metric(x, (x + 0.5 * noise).clamp(-1, 1))
    assert torch.all(small < large)


def test_volume_lpips_is_the_mean_over_axial_slices(weight_files):
    folder, *_ = weight_files
    metric = load_lpips(folder / "lpips_full.safetensors")
    g = torch.Generator().manual_seed(5)
    clean = torch.rand(2, 1, 40, 36, 5, generator=g)
    adv = (clean + 0.05 * torch.randn(clean.shape, generator=g)).clamp(0, 1)
    got = volume_lpips(metric, clean, adv, batch=3)  # batches cut across volumes
    for b in range(2):
        per_slice = [
            metric(
                (clean[b : b + 1, :, :, :, k] * 2 - 1).repeat(1, 3, 1, 1),
                (adv[b : b + 1, :, :, :, k] * 2 - 1).repeat(1, 3, 1, 1),
            )
            for k in range(5)
        ]
        torch.testing.assert_close(got[b], torch.cat(per_slice).mean(), rtol=1e-5, atol=1e-7)
    assert torch.all(volume_lpips(metric, clean, clean) == 0)


def test_volume_lpips_of_several_channels_is_the_mean_of_each_channels(weight_files):
    metric = load_lpips(weight_files[0] / "lpips_full.safetensors")
    clean = torch.rand(2, 3, 36, 36, 4, generator=torch.Generator().manual_seed(6))
    adv = (clean + 0.05 * torch.randn(clean.shape)).clamp(0, 1)
    alone = torch.stack([volume_lpips(metric, clean[:, c : c + 1], adv[:, c : c + 1])
                         for c in range(3)], 1)  # fmt: skip
    torch.testing.assert_close(volume_lpips(metric, clean, adv, batch=5), alone.mean(1))


def test_bad_shapes_are_refused(weight_files):
    folder, *_ = weight_files
    metric = load_lpips(folder / "lpips_full.safetensors")
    small = torch.rand(1, 1, MIN_SLICE - 1, 40, 2)
    with pytest.raises(ValueError, match=f"at least {MIN_SLICE}"):
        volume_lpips(metric, small, small)
    with pytest.raises(ValueError, match=r"\[B, C, H, W, D\]"):
        volume_lpips(metric, torch.rand(1, 1, 40, 40, 2), torch.rand(1, 1, 40, 40, 3))
    with pytest.raises(ValueError, match=r"\[N, 3, H, W\]"):
        metric(torch.rand(1, 1, 40, 40), torch.rand(1, 1, 40, 40))


def test_bad_weight_files_are_refused_by_name(weight_files, tmp_path):
    folder, *_ = weight_files
    with pytest.raises(FileNotFoundError, match=r"nope\.pth"):
        load_lpips(tmp_path / "nope.pth")
    with pytest.raises(ValueError, match=r"missing heads\.0\.weight"):
        load_lpips(folder / "alexnet-owt.pth")  # the trunk without the heads
    with pytest.raises(ValueError, match="missing features"):
        load_lpips(folder / "alex.pth")
    torch.save({"encoder.weight": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match=r"no AlexNet or LPIPS weights.*encoder\.weight"):
        load_lpips(tmp_path / "other.pth")
    wrong = dict(_random_weights()[1])
    wrong["lin2.model.1.weight"] = torch.zeros(1, 512, 1, 1)  # a VGG head
    torch.save(wrong, tmp_path / "vgg_heads.pth")
    with pytest.raises(ValueError, match=r"heads\.2\.weight.*\(1, 512, 1, 1\).*AlexNet"):
        load_lpips([folder / "alexnet-owt.pth", tmp_path / "vgg_heads.pth"])
    (tmp_path / "garbage.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match=r"garbage\.safetensors"):
        load_lpips(tmp_path / "garbage.safetensors")


def test_pickled_code_is_never_run(weight_files, tmp_path):
    """A weights file that smuggles a callable is refused (weights_only), not executed."""
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            import pathlib

            return (pathlib.Path.touch, (marker,))

    torch.save({"features.0.weight": Payload()}, tmp_path / "evil.pth")
    with pytest.raises(ValueError, match=r"LPIPS weights: .*pickled Python objects"):
        load_lpips(tmp_path / "evil.pth")
    assert not marker.exists()


def test_metric_has_no_trainable_state_and_no_download(monkeypatch):
    import urllib.request

    def refuse(*args, **kwargs):
        raise AssertionError("LPIPS tried to download something")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    metric = LPIPS()
    assert not any(p.requires_grad for p in metric.parameters())
    assert not metric.training
