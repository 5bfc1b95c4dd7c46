"""model/train.py's device and precision: which --device/--precision a machine can run, the autocast context of a
training forward pass, and the optimizer step with fp16's loss scaling (unscaled before clipping)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from model.runtime import Runtime, check_device, setup_runtime
from model.train import optimizer_step


@pytest.fixture
def no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine without CUDA, whichever machine runs the tests."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.mark.usefixtures("no_cuda")
def test_auto_picks_the_cpu_without_cuda() -> None:
    assert check_device("auto", "fp32") == "cpu"
    assert check_device("cpu", "bf16") == "cpu"
    rt = setup_runtime("auto", precision="bf16")
    assert rt.device == torch.device("cpu") and rt.describe() == {"precision": "bf16", "device": "cpu"}


@pytest.mark.usefixtures("no_cuda")
@pytest.mark.parametrize(
    ("device", "precision", "needle"),
    [
        ("cuda", "fp32", "--device cuda: no CUDA device here"),
        ("cuda:1", "bf16", "--device cuda: no CUDA device here"),
        ("cpu", "fp16", "--precision fp16 needs CUDA"),
        ("auto", "fp16", "--precision fp16 needs CUDA"),
        ("cpu", "fp8", "--precision 'fp8': choose one of fp32, bf16, fp16"),
        ("tpu", "fp32", "--device 'tpu': choose one of cpu, cuda, auto"),
    ],
)
def test_what_this_machine_cannot_run_is_a_value_error(device: str, precision: str, needle: str) -> None:
    with pytest.raises(ValueError, match="^" + needle.replace("(", r"\(")):
        setup_runtime(device, precision=precision)


def test_autocast_is_nothing_in_fp32_and_bfloat16_under_bf16() -> None:
    layer = nn.Linear(4, 3)
    x = torch.randn(2, 4)
    with Runtime(torch.device("cpu")).autocast():
        assert layer(x).dtype == torch.float32
    with Runtime(torch.device("cpu"), precision="bf16").autocast():
        assert layer(x).dtype == torch.bfloat16
    assert layer.weight.dtype == torch.float32  # the master weights stay fp32


def _model_and_loss(seed: int = 0) -> tuple[nn.Module, torch.optim.Optimizer, torch.Tensor]:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2)
    loss = net(torch.randn(5, 4)).pow(2).sum() * 100  # a large gradient: clipping bites
    return net, opt, loss


def test_without_scaling_the_step_is_the_plain_one() -> None:
    """fp32 and bf16 (a disabled scaler): exactly zero_grad, backward, clip, step."""
    net, opt, loss = _model_and_loss()
    norms = optimizer_step(loss, opt, Runtime(torch.device("cpu")).grad_scaler(), [net.parameters()], 1.0)
    plain, plain_opt, plain_loss = _model_and_loss()
    plain_opt.zero_grad(set_to_none=True)
    plain_loss.backward()
    expected = float(nn.utils.clip_grad_norm_(plain.parameters(), 1.0))
    plain_opt.step()
    assert norms == [expected] and expected > 1.0
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), plain.state_dict().values(), strict=True))


def test_a_scaled_step_unscales_before_clipping_and_skips_an_overflow() -> None:
    """fp16's GradScaler (run here on the CPU, which torch allows): the norms clipped and returned are the true
    gradients', and a step whose gradients overflowed is skipped, reports no norm, and backs the scale off."""
    net, opt, loss = _model_and_loss()
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    norms = optimizer_step(loss, opt, scaler, [list(net[0].parameters()), list(net[2].parameters())], 1.0)
    plain, plain_opt, plain_loss = _model_and_loss()
    plain_loss.backward()
    expected = [float(nn.utils.clip_grad_norm_(m.parameters(), math.inf)) for m in (plain[0], plain[2])]
    assert norms == pytest.approx(expected, rel=1e-5)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    overflow = net(torch.ones(1, 4)).sum() * math.inf
    assert optimizer_step(overflow, opt, scaler, [net.parameters()], 1.0) == []  # no norm to record: skipped
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert scaler.get_scale() == 512.0
