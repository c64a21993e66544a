"""Optional fused kernels (vafa.ops.fusion, VAFA_COMPILE): off by default, the same numbers as
eager PyTorch when on, eager again with one warning when compiling fails."""

import shutil
import sysconfig
import warnings
from pathlib import Path

import pytest
import torch
from pytorch_msssim import ssim as msssim

from vafa.ops import fusion
from vafa.ops.ssim import BlockSSIM


@pytest.fixture(autouse=True)
def _follow_environment():
    fusion.enable(None)
    yield
    fusion.enable(None)


@pytest.mark.parametrize(
    ("text", "on"), [(None, False), ("", False), ("0", False), ("off", False), ("1", True),
                     ("ON", True), ("yes", True)],
)  # fmt: skip
def test_enabled_follows_vafa_compile(monkeypatch, text, on):
    if text is None:
        monkeypatch.delenv("VAFA_COMPILE", raising=False)
    else:
        monkeypatch.setenv("VAFA_COMPILE", text)
    assert fusion.enabled() is on
    fusion.enable(not on)  # Python overrides the environment
    assert fusion.enabled() is (not on)


def test_a_bad_vafa_compile_value_is_named(monkeypatch):
    monkeypatch.setenv("VAFA_COMPILE", "maybe")
    with pytest.raises(ValueError, match="VAFA_COMPILE must be 1/on or 0/off, got 'maybe'"):
        fusion.enabled()


def test_off_calls_the_function_itself(monkeypatch):
    monkeypatch.setattr(torch, "compile", lambda *a, **k: pytest.fail("compiled while off"))
    fusion.enable(False)
    f = fusion.fused(lambda a, b: a * b + 1)
    assert f(2, 3) == 7


def test_a_failing_compiler_falls_back_to_eager_with_one_warning(monkeypatch):
    calls = []

    def broken_compile(fn, **kwargs):
        def run(*args):
            calls.append(args)
            raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found\nmore text")

        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    fusion.enable(True)

    def twice(x):
        return 2 * x

    f = fusion.fused(twice)
    with pytest.warns(RuntimeWarning, match="compiling twice failed .InvalidCxxCompiler"):
        assert f(torch.ones(3)).tolist() == [2.0, 2.0, 2.0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second call: eager, silently
        assert f(torch.ones(2)).tolist() == [2.0, 2.0]
    assert len(calls) == 1
    with pytest.raises(TypeError):  # a genuine error is still raised (by the eager call)
        f()


@pytest.mark.slow
@pytest.mark.skipif(
    (shutil.which("c++") is None and shutil.which("g++") is None)
    or not Path(sysconfig.get_paths()["include"], "Python.h").is_file(),
    reason="torch.compile on the CPU needs a C++ compiler and Python's headers",
)
def test_compiled_block_ssim_equals_eager_and_pytorch_msssim():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 1, 16, 16, 16, generator=g)
    y = (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    ssim = BlockSSIM(x, 16)  # one block: pytorch-msssim on the whole volume

    def value_and_grad():
        yy = y.clone().requires_grad_(True)
        value = ssim(yy)
        return value.detach(), torch.autograd.grad(value.sum(), yy)[0]

    fusion.enable(False)
    eager_value, eager_grad = value_and_grad()
    fusion.enable(True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no fallback to eager
        value, grad = value_and_grad()
    torch.testing.assert_close(value, eager_value, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, eager_grad, rtol=1e-4, atol=1e-7)
    reference = msssim(x, y, data_range=1, win_size=3, win_sigma=1.5, nonnegative_ssim=True)
    torch.testing.assert_close(value, reference.reshape(1), rtol=1e-4, atol=1e-6)
