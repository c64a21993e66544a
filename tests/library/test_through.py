"""The deployed prediction as a differentiable model (vafa.run.through.DeployedModel): its
logits and its window-by-window gradient against autograd through every window at once and
against MONAI's sliding_window_inference; what its forward pass keeps for the backward."""

from __future__ import annotations

import pytest
import torch
from factories import tiny_card, tiny_model

from vafa.io.inference import Inference
from vafa.run.through import DeployedModel, check_through
from vafa.run.windows import WindowPlan, windowed_logits

ROI = (16, 16, 16)
CASES = {
    "constant": Inference(),
    "gaussian, batches of 2": Inference(mode="gaussian", sw_batch_size=2, overlap=0.25),
    "nnU-Net, mirrored": Inference(
        mode="gaussian", windows="nnunet", mirror_axes=(0, 2), allowed_mirror_axes=(0, 1, 2)
    ),
    "replicate padding": Inference(padding_mode="replicate"),
}


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return tiny_model(tiny_card()).eval().requires_grad_(False)


def _gradient(model, x, weights):
    x = x.clone().requires_grad_(True)
    logits = model(x)
    (logits * weights).sum().backward()
    return logits.detach(), x.grad


@pytest.mark.parametrize("name", list(CASES))
def test_logits_and_gradient_equal_autograd_through_every_window(net, name, monkeypatch):
    inference = CASES[name]
    torch.manual_seed(1)
    x = torch.rand(2, 1, 20, 12, 28)  # one axis shorter than the window: padded
    weights = torch.randn(2, 3, 20, 12, 28)
    deployed = DeployedModel(net, ROI, inference)
    ours, grad = _gradient(deployed, x, weights)
    with torch.no_grad():
        torch.testing.assert_close(ours, windowed_logits(net, x, ROI, inference))
    # the reference: autograd through every window at once, summed in float32 (nnU-Net's own
    # float16 sums, which the prediction keeps, overflow 1/n in a float16 gradient)
    monkeypatch.setattr(WindowPlan, "sum_dtype", property(lambda plan: None), raising=False)
    _, reference = _gradient(lambda v: windowed_logits(net, v, ROI, inference), x, weights)
    torch.testing.assert_close(grad, reference, rtol=1e-4, atol=1e-6)
    assert grad.abs().sum() > 0


def test_the_gradient_equals_monai_s_differentiable_sliding_window(net):
    from monai.inferers import sliding_window_inference

    torch.manual_seed(2)
    x = torch.rand(1, 1, 24, 20, 18)
    weights = torch.randn(1, 3, 24, 20, 18)
    for mode in ("constant", "gaussian"):
        deployed = DeployedModel(net, ROI, Inference(mode=mode))
        _, ours = _gradient(deployed, x, weights)
        _, monai = _gradient(
            lambda v, m=mode: sliding_window_inference(v, ROI, 1, net, overlap=0.5, mode=m),
            x,
            weights,
        )
        torch.testing.assert_close(ours, monai, rtol=1e-4, atol=1e-6)


def test_the_forward_pass_keeps_only_its_input(net):
    """Memory-bounded: autograd keeps the volume for the backward pass, not the windows'
    activations (which the direct graph keeps for every window)."""
    x = torch.rand(1, 1, 40, 40, 40, requires_grad=True)
    saved = []

    def pack(tensor):
        saved.append(tensor.numel() * tensor.element_size())
        return tensor

    for model in (DeployedModel(net, ROI, Inference()), None):
        saved.clear()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            if model is None:
                windowed_logits(net, x, ROI, Inference()).sum()
            else:
                model(x).sum()
        if model is not None:
            ours = sum(saved)
    direct = sum(saved)
    volume = x.numel() * x.element_size()
    assert ours <= 2 * volume < direct / 10, (ours, volume, direct)


def test_threat_model_names():
    assert check_through("tiles") == "tiles"
    assert check_through("Sliding_Window") == check_through("deployed") == "sliding-window"
    with pytest.raises(ValueError, match=r"through must be one of \['tiles', 'sliding-window'\]"):
        check_through("windows")


def test_an_attack_through_the_sliding_window_optimises_the_deployed_prediction():
    """The whole volume is attacked as one piece through the deployed prediction: the Dice the
    attack saw for its returned iterate is the Dice of the sliding-window prediction that the
    outcome reports (with tiles they differ)."""
    from factories import ct_phantom, phantom_affine, phantom_card

    from vafa.io.volume import Volume
    from vafa.run.pipeline import run_attack

    card = phantom_card()
    model = tiny_model(card).eval()
    hu, labels = ct_phantom((28, 24, 20))
    image, target = Volume(hu, phantom_affine()), Volume(labels, phantom_affine())
    outcome = run_attack(model, card, image, target, attack="pgd", options={"steps": 3, "eps": 8},
                         seed=0, through="sliding-window")  # fmt: skip
    settings = outcome.settings["attack"]
    assert settings["through"] == "sliding-window" and settings["tiles"] == 1
    metrics = outcome.metrics
    assert metrics.per_tile.dice_fg.adversarial == pytest.approx(
        metrics.dice_fg.adversarial, abs=1e-6
    )
    assert metrics.per_tile.dice_fg.clean == pytest.approx(metrics.dice_fg.clean, abs=1e-6)
    assert metrics.dice_fg.adversarial < metrics.dice_fg.clean
    tiles = run_attack(model, card, image, target, attack="pgd", options={"steps": 3, "eps": 8},
                       seed=0)  # fmt: skip
    assert tiles.settings["attack"]["through"] == "tiles" and tiles.settings["attack"]["tiles"] > 1
    with pytest.raises(ValueError, match="through must be one of"):
        run_attack(model, card, image, target, attack="gn", through="windows")
